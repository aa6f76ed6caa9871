"""The XLA:CPU settings every command runs with: convolutions on XLA's own (Eigen)
kernels instead of YNNPACK.

Why: jaxlib 0.10 hands each convolution to YNNPACK (`individual_convolution` in the
default `--xla_cpu_experimental_ynn_fusion_type` list). Its weight-gradient convolution
is 2-4x slower than XLA's Eigen kernel on this project's shapes (CNN conv2, batch 128:
32 vs 16 ms; ResNet-20 16 channels: 31 vs 23 ms), while forward and input-gradient
convolutions cost about the same on both. Taking convolutions, and only them, out of
YNNPACK (with all of it off, the CNN's step was 40% slower) makes the main command's
CNN train in 177 s instead of 294 s on 2 cores (benchmarks/README.md).

`configure()` appends the flag to XLA_FLAGS; XLA reads XLA_FLAGS once, when JAX first
creates its CPU backend, so it must run before the first JAX computation (importing
jax is fine). The experiments' command line, `train` (hence notebooks and scripts that
import it), the benchmarks and the test suite call it. It does nothing when:
  - REDCONV_XLA_CPU=default is set (the opt-out: XLA's own defaults);
  - XLA_FLAGS already sets `--xla_cpu_experimental_ynn_fusion_type` (the user's wins);
  - jaxlib is not a 0.10.x release (measured on 0.10.2), or not installed: XLA aborts
    the process on an unknown flag or list item, so the flag is only given to the
    releases whose default it was measured against; for another jaxlib, measure again
    (benchmarks/README.md) before widening JAXLIB_RANGE.
Check with `python -m xla_cpu`. Results differ from XLA's defaults in the last bits of
float32 sums (another convolution kernel), as any change of kernel does.
"""
from __future__ import annotations

import os
from importlib import metadata
from typing import Mapping

OPT_OUT = 'REDCONV_XLA_CPU'  # =default: leave XLA:CPU's own defaults
FLAG_NAME = '--xla_cpu_experimental_ynn_fusion_type'
FLAG = f'{FLAG_NAME}=-individual_convolution'
JAXLIB_RANGE = ((0, 10), (0, 11))  # [first, last): the (major, minor) releases it is given to


def jaxlib_version() -> tuple[int, ...] | None:
  """The installed jaxlib's (major, minor), or None."""
  try:
    parts = metadata.version('jaxlib').split('.')[:2]
    return tuple(int(p) for p in parts)
  except (metadata.PackageNotFoundError, ValueError):
    return None


def xla_flags(environ: Mapping[str, str], version: tuple[int, ...] | None) -> str | None:
  """The XLA_FLAGS to run with, or None to leave the environment as it is."""
  flags = environ.get('XLA_FLAGS', '')
  if (environ.get(OPT_OUT, '').strip().lower() == 'default' or FLAG_NAME in flags
      or version is None or not JAXLIB_RANGE[0] <= version < JAXLIB_RANGE[1]):
    return None
  return f'{flags} {FLAG}'.strip()


def configure() -> None:
  """Adds the flag to this process's XLA_FLAGS (see the module doc for when not)."""
  flags = xla_flags(os.environ, jaxlib_version())
  if flags is not None:
    os.environ['XLA_FLAGS'] = flags


def describe() -> str:
  """One line: whether convolutions run on Eigen or YNNPACK in this process."""
  flags = os.environ.get('XLA_FLAGS', '')
  if FLAG in flags.split():
    return f'XLA:CPU convolutions: Eigen ({FLAG})'
  if FLAG_NAME in flags:
    return f'XLA:CPU convolutions: as XLA_FLAGS sets them ({flags})'
  return 'XLA:CPU convolutions: XLA defaults (YNNPACK on jaxlib 0.10)'


if __name__ == '__main__':
  configure()
  print(describe())
