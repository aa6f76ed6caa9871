"""Compiled CPU kernels for convolutions, called from XLA through its FFI.

`weight_grad(lhs, out_grad, kernel_shape, padding, strides)` is the weight gradient of
an NHWC / HWIO float32 convolution (no dilation, one group). On CPU it runs `weight_grad.cc`, a skinny-GEMM
kernel that keeps its accumulators in vector registers; XLA's own kernel for it (Eigen)
was 2-4x slower than TensorFlow's oneDNN and is where our conv nets lost to Keras
(benchmarks/README.md). On GPU and TPU, and wherever the kernel cannot be built, it is
lax's own weight gradient: the same sums in another order.

The kernel is compiled on first use, for the machine it runs on (`-march=native`), by
the C++ compiler found first of `$CXX`, `c++`, `g++`, `clang++`, and cached under
`$REDCONV_KERNEL_CACHE` (default `~/.cache/redconv/kernels`) by a hash of the source,
the compiler, the flags, jaxlib's version and the CPU's features; that takes ~10 s once
per machine. No compiler, or a failed build: one warning, then lax's kernel (the same
results up to float32 rounding). `REDCONV_CONV_KERNELS=lax` chooses lax's kernel
outright (to compare, or to rule this one out). `python -m models.conv_kernels` says
which one a machine gets.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

TARGET = 'redconv_conv_weight_grad'
SOURCE = os.path.join(os.path.dirname(__file__), 'weight_grad.cc')
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _compiler() -> Optional[str]:
  for name in (os.environ.get('CXX'), 'c++', 'g++', 'clang++'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _flags() -> list[str]:
  arch = '-mcpu=native' if platform.machine().lower() in ('arm64', 'aarch64') else '-march=native'
  return ['-O3', arch, '-std=c++17', '-fPIC', '-shared', '-w',
          f'-I{jax.ffi.include_dir()}']


def _cpu_features() -> str:
  """What `-march=native` depends on: the CPU's flags line (Linux), else its name."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith(('flags', 'Features')):
          return line
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _cache_dir() -> str:
  return os.environ.get('REDCONV_KERNEL_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'redconv', 'kernels')


def build(compiler: Optional[str] = None) -> str:
  """The path of the compiled library, compiling it if this machine has none cached.
  Raises RuntimeError (with the compiler's output) when it cannot be built."""
  compiler = compiler or _compiler()
  if compiler is None:
    raise RuntimeError('no C++ compiler found (tried $CXX, c++, g++, clang++)')
  with open(SOURCE, 'rb') as f:
    source = f.read()
  version = subprocess.run([compiler, '--version'], capture_output=True, text=True).stdout
  key = hashlib.sha256(b'\0'.join(part.encode() if isinstance(part, str) else part for part in (
      source, compiler, version, ' '.join(_flags()), jax.lib.__version__,
      _cpu_features()))).hexdigest()[:16]
  path = os.path.join(_cache_dir(), f'weight_grad_{key}.so')
  if os.path.exists(path):
    return path
  os.makedirs(_cache_dir(), exist_ok=True)
  # Built beside its final name and renamed: parallel processes (pytest -n) never load
  # a half-written library.
  fd, partial = tempfile.mkstemp(suffix='.so', dir=_cache_dir())
  os.close(fd)
  result = subprocess.run([compiler, *_flags(), SOURCE, '-o', partial],
                          capture_output=True, text=True)
  if result.returncode:
    os.unlink(partial)
    raise RuntimeError(f'{compiler} could not build {SOURCE} (exit {result.returncode}):\n'
                       f'{result.stderr[-2000:]}')
  os.replace(partial, path)
  return path


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether `weight_grad` runs the compiled kernel on CPU (built and registered once
  per process; a failure warns once and leaves lax's kernel)."""
  if os.environ.get('REDCONV_CONV_KERNELS', '').lower() == 'lax':
    return False
  try:
    library = ctypes.CDLL(build())
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.RedconvConvWeightGrad),
                                platform='cpu')
  except (RuntimeError, OSError, AttributeError) as e:
    warnings.warn(f'models.conv_kernels: using lax\'s convolution weight gradient on CPU '
                  f'(slower, same results up to rounding): {e}', RuntimeWarning)
    return False
  return True


def lax_weight_grad(lhs: jnp.ndarray, out_grad: jnp.ndarray, kernel_shape: tuple[int, ...],
                    padding: tuple[tuple[int, int], tuple[int, int]],
                    strides: tuple[int, int] = (1, 1)) -> jnp.ndarray:
  """lax's weight gradient of the same convolution (the reference and the fallback)."""
  def conv(kernel):
    return lax.conv_general_dilated(lhs, kernel, strides, padding, dimension_numbers=_NHWC)
  return jax.vjp(conv, jnp.zeros(kernel_shape, lhs.dtype))[1](out_grad)[0]


def weight_grad(lhs: jnp.ndarray, out_grad: jnp.ndarray, kernel_shape: tuple[int, ...],
                padding: tuple[tuple[int, int], tuple[int, int]],
                strides: tuple[int, int] = (1, 1)) -> jnp.ndarray:
  """dL/dkernel `[kh, kw, C, O]` of `conv(lhs [N, H, W, C], kernel)` (NHWC / HWIO,
  float32, explicit `padding` ((top, bottom), (left, right)), `strides`) given dL/dout
  `[N, H', W', O]`."""
  (top, bottom), (left, right) = padding
  plain = (lhs.dtype == out_grad.dtype == jnp.float32 and lhs.ndim == 4
           and min(top, bottom, left, right) >= 0 and min(strides) >= 1)
  if not (plain and available()):
    return lax_weight_grad(lhs, out_grad, kernel_shape, padding, strides)

  def compiled(lhs, out_grad):
    return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(tuple(kernel_shape), jnp.float32),
                            vmap_method='sequential')(
                                lhs, out_grad, pad_top=np.int64(top), pad_left=np.int64(left),
                                stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]))

  def reference(lhs, out_grad):
    return lax_weight_grad(lhs, out_grad, kernel_shape, padding, strides)
  # Decided when lowering: CUDA and TPU lowerings contain lax's gradient only.
  return lax.platform_dependent(lhs, out_grad, cpu=compiled, default=reference)


def main() -> None:
  if available():
    print(f'compiled weight-gradient kernel: {build()}')
  else:
    print('lax\'s weight gradient (no compiled kernel: see the warning above, or '
          'REDCONV_CONV_KERNELS=lax)')
  sys.exit(0)


if __name__ == '__main__':
  main()
