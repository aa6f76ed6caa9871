"""Minor page faults, system time and images per CPU-second of a bare train step,
under the system allocator (glibc malloc) vs. mimalloc (allocator.py).

Each (model, allocator) pair runs in its own subprocess: `REDCONV_ALLOCATOR=system`
for glibc, the default re-execution with mimalloc otherwise. A worker jits the
project's `train.steps.train_step` (donated state, the classification task), runs
3 warm-up steps, then times `--steps` steps on one fixed random uint8 batch (no input
pipeline) and reads its own rusage. Minor faults and CPU-seconds are far less
disturbed by other load on the machine than wall time.

  PYTHONPATH=. python benchmarks/allocator_faults.py [--models cnn,resnet20] [--rounds 2]
prints the table and writes benchmarks/results/allocator_faults.md.
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time

if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()

import allocator  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks.train_throughput import WORKLOADS  # noqa: E402

SHAPES = {'fashion_mnist': (28, 28, 1), 'cifar10': (32, 32, 3)}
ALLOCATORS = ('system', 'mimalloc')


def run_worker(name: str, batch_size: int, steps: int) -> dict:
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import optax
  from models import build_model
  from tasks.classification.task import classification_task
  from train import steps as steps_lib
  from train.state import create_train_state
  w = WORKLOADS[name]
  shape = SHAPES[w.dataset]
  model = build_model(dict(w.model_config), num_classes=10)
  task = classification_task(mean=0.5, std=0.25)
  state = create_train_state(model, optax.adamw(1e-3), (1, *shape), jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps_lib.train_step, loss_fn=task.loss_fn,
                                   inputs_fn=task.inputs_fn), donate_argnums=(0,))
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (batch_size, *shape)).astype(np.uint8),
           'label': rng.integers(0, 10, batch_size).astype(np.int32)}
  for _ in range(3):
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(steps):
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
  return {'faults_per_step': (r1.ru_minflt - r0.ru_minflt) / steps, 'user_s': user,
          'system_s': system, 'wall_s': t1 - t0,
          'img_per_cpu_s': steps * batch_size / (user + system),
          'img_per_s': steps * batch_size / (t1 - t0), 'load_1min': os.getloadavg()[0],
          'peak_rss_mib': common.peak_rss_mib(),
          'allocator': 'mimalloc' if allocator.active() else 'system'}


def worker_env(name: str) -> dict[str, str]:
  env = common.thread_env()
  for key in ('LD_PRELOAD', allocator.GUARD, allocator.OPT_OUT):
    env.pop(key, None)
  if name == 'system':
    env[allocator.OPT_OUT] = 'system'
  return env


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='cnn,resnet20')
  parser.add_argument('--steps', default='cnn:60,resnet20:20', help='model:steps,...')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=2, help='system/mimalloc pairs per model')
  parser.add_argument('--output', default=os.path.join(common.REPO, 'benchmarks', 'results',
                                                      'allocator_faults.md'))
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  steps = {m: int(n) for m, n in (item.split(':') for item in args.steps.split(','))}
  if args.worker:
    common.emit_result(run_worker(args.models, args.batch_size, steps.get(args.models, 20)))
    return
  rows = []
  for model in args.models.split(','):
    for round_ in range(args.rounds):
      for name in ALLOCATORS:  # interleaved, so drifting load hits both alike
        r = common.run_worker('benchmarks.allocator_faults',
                              ['--worker', name, '--models', model, '--steps', args.steps,
                               '--batch_size', str(args.batch_size)], 900, worker_env(name))
        print(model, name, r, file=sys.stderr, flush=True)
        if 'error' in r:
          rows.append([model, name, round_ + 1, r['error'], '', '', '', '', ''])
          continue
        rows.append([model, r['allocator'], round_ + 1, f'{r["faults_per_step"]:,.0f}',
                     f'{r["system_s"]:.2f}', f'{r["user_s"]:.2f}', f'{r["img_per_cpu_s"]:,.0f}',
                     f'{r["img_per_s"]:,.0f}', f'{r["load_1min"]:.1f}'])
  headers = ['model', 'allocator', 'round', 'minor faults/step', 'system s', 'user s',
             'img/CPU-s', 'img/s', 'load']
  table = common.markdown_table(headers, rows)
  intro = (f'Batch {args.batch_size}, steps per worker {args.steps}, 3 warm-up steps; '
           '`PYTHONPATH=. python benchmarks/allocator_faults.py ' + ' '.join(sys.argv[1:])
           + '`\n\n' + common.machine_description(['jax', 'jaxlib', 'cmeel-mimalloc']))
  print(table)
  common.write_report(args.output, 'Allocator: page faults of a train step, glibc vs. mimalloc',
                      intro, table, '')


if __name__ == '__main__':
  main()
