"""The memory allocator every command runs with: mimalloc, from the PyPI wheel
`cmeel-mimalloc` (a core dependency on Linux x86_64 and aarch64).

Why: on XLA:CPU, glibc malloc hands each step's large freed buffers back to the kernel
and maps them afresh at the next step; a CNN train step (batch 128) took ~17,800 minor
page faults and a third of the CPU went to the kernel. mimalloc keeps the memory
(~330 faults per step; benchmarks/README.md has the measurements).

A malloc can only be replaced before the process starts, so `preload()` re-executes the
running command once (same interpreter, same command line) with LD_PRELOAD naming
libmimalloc. The experiments' command line (`python -m experiments.<name>`) and the
benchmark scripts call it before they import TensorFlow or JAX; their subprocesses
(the benchmark peers) inherit the environment, so they run on the same allocator.

It does nothing, and the command goes on with the system allocator, when:
  - REDCONV_ALLOCATOR=system is set (the opt-out);
  - LD_PRELOAD is already set: whoever set it manages this process's preloads (another
    allocator, a sanitizer that must come first, a profiler), and two allocators each
    owning part of malloc/free would crash; so we leave it alone rather than prepend;
  - the platform is not Linux, or the wheel (hence libmimalloc.so) is not installed;
  - this process is already the re-executed one (`_REDCONV_ALLOCATOR_PRELOADED`).
Check with `python -m allocator`, `--debug` on any experiment, or
`grep mimalloc /proc/<pid>/maps` for a running command.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Mapping

OPT_OUT = 'REDCONV_ALLOCATOR'  # =system: keep the system allocator
GUARD = '_REDCONV_ALLOCATOR_PRELOADED'  # set in the re-executed process: never twice
DISTRIBUTION = 'cmeel-mimalloc'
LIBRARY = 'libmimalloc.so'


def library_path() -> str | None:
  """The installed libmimalloc.so of the cmeel-mimalloc wheel, or None."""
  try:
    files = metadata.distribution(DISTRIBUTION).files or []
  except metadata.PackageNotFoundError:
    return None
  for file in files:
    if file.name == LIBRARY:
      path = os.path.abspath(str(file.locate()))
      return path if os.path.isfile(path) else None
  return None


def preload_environment(environ: Mapping[str, str], platform: str,
                        library: str | None) -> dict[str, str] | None:
  """The environment to re-execute with, or None to go on as is (see the module doc)."""
  if (platform != 'linux' or library is None or GUARD in environ
      or environ.get(OPT_OUT, '').strip().lower() == 'system'
      or environ.get('LD_PRELOAD', '').strip()):
    return None
  return {**environ, 'LD_PRELOAD': library, GUARD: '1'}


def preload() -> None:
  """Re-executes this process once with mimalloc preloaded; returns if it does not.

  Call it first thing in a command's entry point (before TensorFlow or JAX are
  imported: everything imported before it is imported twice), never in a library
  function or under pytest, since it replaces the whole process.
  """
  environ = preload_environment(os.environ, sys.platform, library_path())
  if environ is None or not sys.executable:
    return
  # sys.orig_argv is the interpreter's own command line (`-m pkg.mod`, `-c code`, flags),
  # which sys.argv has already lost.
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
  except OSError:
    return  # the interpreter could not be re-executed: go on with the system allocator


def started_as(prefix: str) -> bool:
  """Whether this interpreter was started as `python -m <prefix>...`."""
  args = iter(sys.orig_argv[1:])
  for arg in args:
    if arg == '-m':
      return next(args, '').startswith(prefix)
    if arg.startswith('-m'):
      return arg[2:].startswith(prefix)
    if arg in ('-X', '-W', '--check-hash-based-pycs'):
      next(args, None)  # the option's value
    elif arg in ('-c', '-') or not arg.startswith('-'):
      return False
  return False


def active() -> str | None:
  """The path of the mimalloc library mapped into this process, or None."""
  try:
    with open('/proc/self/maps') as f:
      for line in f:
        if 'libmimalloc' in line:
          return line.split(maxsplit=5)[-1].strip()
  except OSError:
    pass
  return None


def describe() -> str:
  """One line: which allocator this process runs with."""
  path = active()
  if path:
    return f'allocator: mimalloc ({path})'
  why = ('REDCONV_ALLOCATOR=system' if os.environ.get(OPT_OUT, '').strip().lower() == 'system'
         else f'LD_PRELOAD={os.environ["LD_PRELOAD"]}' if os.environ.get('LD_PRELOAD')
         else 'not Linux' if sys.platform != 'linux'
         else f'{DISTRIBUTION} is not installed' if library_path() is None
         else 'not preloaded')
  return f'allocator: system ({why})'


if __name__ == '__main__':
  preload()
  print(describe())
