"""Shared by the benchmark scripts: the machine's description, timing, peak memory,
one framework per subprocess, and markdown tables.

Each framework runs in its own subprocess (`run_worker`) so its peak resident memory
and its thread pools are its own; the worker prints one `RESULT {json}` line.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import allocator
import xla_cpu
from report import tables

# Before any benchmark's first JAX computation: the convolution kernels every command
# runs with (xla_cpu.py); REDCONV_XLA_CPU=default measures XLA's own defaults.
xla_cpu.configure()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, '..', 'shared', 'data')
# Intra-op threads given to every framework: the 2 cores of the benchmark machine.
THREADS = 2
RESULT_PREFIX = 'RESULT '


def cpu_model() -> str:
  """The CPU's name and its widest x86 vector extension ('AMD EPYC (AVX2)'): the
  compiled kernels' speed depends on it (3-5x between two builds, benchmarks/README.md)."""
  name, flags = None, set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name') and name is None:
          name = line.split(':', 1)[1].strip()
        elif line.startswith('flags') and not flags:
          flags = set(line.split(':', 1)[1].split())
  except OSError:
    pass
  name = name or platform.processor() or 'unknown CPU'
  vector = next((label for flag, label in (('avx512f', 'AVX-512'), ('avx2', 'AVX2'))
                 if flag in flags), None)
  return f'{name} ({vector})' if vector else name


def library_versions(names: Sequence[str]) -> dict[str, str]:
  """Installed versions from package metadata (no import, so no start-up cost)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  versions = {}
  for name in names:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = 'not installed'
  return versions


def machine_description(libraries: Sequence[str]) -> str:
  """One markdown paragraph: CPU, cores, memory, load, Python and library versions."""
  pages = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  libs = ', '.join(f'{k} {v}' for k, v in library_versions(libraries).items())
  return (f'Machine: {cpu_model()}, {os.cpu_count()} cores, {pages / 2**30:.0f} GiB RAM, '
          f'no accelerator; Python {platform.python_version()}; {libs}. '
          f'Load average (1/5/15 min) when the table was written: {load}. '
          f'Benchmark process {allocator.describe()}; {xla_cpu.describe()}.')


def peak_rss_mib() -> float:
  """This process's peak resident set size in MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
  """Wall and CPU time of a block; CPU seconds are the contention-robust companion."""

  def __enter__(self):
    self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self.wall0
    self.cpu = time.process_time() - self.cpu0


def timed_repeats(run: Callable[[], None], repeats: int) -> list[tuple[float, float]]:
  """(wall, cpu) seconds of each of `repeats` calls of `run`."""
  times = []
  for _ in range(repeats):
    with Clock() as clock:
      run()
    times.append((clock.wall, clock.cpu))
  return times


def summarize(items_per_repeat: int, warmup: Clock, times: list[tuple[float, float]],
              **extra: Any) -> dict[str, Any]:
  """The worker's result: median items/s, items per CPU-second, warm-up, peak RSS."""
  return {'items_per_s': statistics.median(items_per_repeat / w for w, _ in times),
          'items_per_s_all': [items_per_repeat / w for w, _ in times],
          'items_per_cpu_s': statistics.median(items_per_repeat / c for _, c in times),
          'warmup_s': warmup.wall, 'peak_rss_mib': peak_rss_mib(),
          'load_1min': os.getloadavg()[0],
          'allocator': 'mimalloc' if allocator.active() else 'system', **extra}


def emit_result(result: dict[str, Any]) -> None:
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def thread_env(threads: int = THREADS) -> dict[str, str]:
  """Environment that caps the BLAS/OpenMP pools a framework may start to `threads`."""
  env = dict(os.environ)
  env.update({'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads),
              'TF_NUM_INTRAOP_THREADS': str(threads), 'TF_CPP_MIN_LOG_LEVEL': '2',
              'PYTHONPATH': REPO + os.pathsep + env.get('PYTHONPATH', '')})
  return env


def run_worker(module: str, args: Sequence[str], timeout_s: float,
               env: dict[str, str] | None = None) -> dict[str, Any]:
  """Runs `python -m module args...` from the repo root; returns its RESULT, or an `error`."""
  command = [sys.executable, '-m', module, *args]
  try:
    proc = subprocess.run(command, cwd=REPO, env=env or thread_env(), capture_output=True,
                          text=True, timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout_s:.0f} s'}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  tail = [l for l in (proc.stderr + proc.stdout).strip().splitlines() if l.strip()][-3:]
  return {'error': f'exit {proc.returncode}: ' + ' | '.join(l.strip()[:200] for l in tail)}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  return '\n'.join(tables.markdown_table(headers, rows))


def write_report(path: str, title: str, intro: str, table: str, notes: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(f'# {title}\n\n{intro}\n\n{table}\n\n{notes}\n')


def endless_train_batches(dataset: Any, batch_size: int, seed: int = 0):
  """The project's training batches (NumPy dicts), epoch after epoch, without end.

  Imports the pipeline lazily so peer workers never load the project's data code.
  """
  from data import pipeline  # pylint: disable=g-import-not-at-top
  epoch = 0
  while True:
    yield from pipeline.as_numpy(pipeline.train_batches(
        dataset, batch_size=batch_size, seed=seed, epoch=epoch))
    epoch += 1
