"""Compiled CPU kernels for convolutions, called from XLA through its FFI.

For an NHWC / HWIO float32 convolution (no dilation, one group):
`forward(lhs, rhs, padding, strides)`, `input_grad(out_grad, rhs, padding, lhs_shape,
strides)` (the forward kernel on the flipped kernel; with a stride, on each phase of the
input) and `weight_grad(lhs, out_grad, kernel_shape, padding, strides)`. On CPU they run
`conv.cc` and `weight_grad.cc`, GEMM kernels that keep a block of accumulators in vector
registers: XLA's own (Eigen) weight gradient was 2-4x slower than TensorFlow's oneDNN,
its forward pass up to 2x at 16 channels, and that is where our conv nets lost to Keras
(benchmarks/README.md). For 3x3 convolutions at stride 1 with 32 or more channels all
three are Winograd's F(2x2, 3x3) (`winograd.cc`; the weight gradient
`winograd_weight_grad.cc`): 2.25x fewer multiply-adds, 0.54-0.77x the direct kernels'
time (`REDCONV_CONV_KERNELS=direct` keeps the direct ones). On GPU and TPU, and wherever the
kernels cannot be built, they are lax's own: the same sums in another order. On a
mesh of several CPU devices XLA's partitioner gathers the batch around each call (the
results are right, the work is not split; one CPU device is the project's setting,
benchmarks/README.md).

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

# XLA FFI target name -> the handler's symbol in SOURCES.
TARGETS = {'redconv_conv_forward': 'RedconvConvForward',
           'redconv_conv_winograd': 'RedconvConvWinograd',
           'redconv_conv_weight_grad': 'RedconvConvWeightGrad',
           'redconv_conv_winograd_weight_grad': 'RedconvConvWinogradWeightGrad',
           'redconv_bn_stats': 'RedconvBnStats',
           'redconv_bn_apply': 'RedconvBnApply',
           'redconv_bn_apply_residual': 'RedconvBnApplyResidual',
           'redconv_bn_grad_sums': 'RedconvBnGradSums',
           'redconv_bn_grad_input': 'RedconvBnGradInput',
           'redconv_bn_grad_input_residual': 'RedconvBnGradInputResidual',
           'redconv_bn_apply_pool': 'RedconvBnApplyPool',
           'redconv_bn_pool_grad_sums': 'RedconvBnPoolGradSums',
           'redconv_bn_pool_grad_input': 'RedconvBnPoolGradInput'}
_HERE = os.path.dirname(__file__)
# Compiled together into one library (batch_norm.cc and bn_pool.cc: BatchNorm's
# passes, norm.py).
SOURCES = tuple(os.path.join(_HERE, name)
                for name in ('conv.cc', 'winograd.cc', 'weight_grad.cc',
                             'winograd_weight_grad.cc', 'batch_norm.cc', 'bn_pool.cc'))
HEADERS = tuple(os.path.join(_HERE, name)
                for name in ('conv_common.h', 'norm_common.h', 'parallel_for.h', 'vector.h',
                             'winograd.h'))
BUILD_TIMEOUT_S = 300  # ~5 s here; a stuck compiler must not hang every experiment
NHWC = ('NHWC', 'HWIO', 'NHWC')  # the layouts every function here takes


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
  sources = []
  for path in SOURCES + HEADERS:
    with open(path, 'rb') as f:
      sources.append(f.read())
  version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                           timeout=60).stdout
  key = hashlib.sha256(b'\0'.join(part.encode() if isinstance(part, str) else part for part in (
      *sources, compiler, version, ' '.join(_flags()), jax.lib.__version__,
      _cpu_features()))).hexdigest()[:16]
  path = os.path.join(_cache_dir(), f'conv_{key}.so')
  if os.path.exists(path):
    return path
  os.makedirs(_cache_dir(), exist_ok=True)
  # Built beside its final name and renamed: parallel processes (pytest -n) never load
  # a half-written library.
  fd, partial = tempfile.mkstemp(suffix='.so', dir=_cache_dir())
  os.close(fd)
  try:
    result = subprocess.run([compiler, *_flags(), *SOURCES, '-o', partial],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
  except subprocess.TimeoutExpired as e:
    os.unlink(partial)
    raise RuntimeError(f'{compiler} took over {BUILD_TIMEOUT_S} s to build {SOURCES}') from e
  if result.returncode:
    os.unlink(partial)
    raise RuntimeError(f'{compiler} could not build {SOURCES} (exit {result.returncode}):\n'
                       f'{result.stderr[-2000:]}')
  os.replace(partial, path)
  return path


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether the functions here run the compiled kernels on CPU (built and registered
  once per process; a failure warns once and leaves lax's kernels)."""
  if os.environ.get('REDCONV_CONV_KERNELS', '').lower() == 'lax':
    return False
  try:
    library = ctypes.CDLL(build())
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform='cpu')
  except (RuntimeError, OSError, AttributeError, subprocess.SubprocessError) as e:
    warnings.warn(f'models.conv_kernels: using lax\'s convolution kernels on CPU '
                  f'(slower, same results up to rounding): {e}', RuntimeWarning)
    return False
  return True


Padding = tuple[tuple[int, int], tuple[int, int]]


def _compiled_applies(*arrays: jnp.ndarray, padding: Padding, strides: tuple[int, int]) -> bool:
  # Empty arrays (a batch of none) go to lax: the kernels' fixed parts assume work.
  return (all(a.dtype == jnp.float32 and a.ndim == 4 and a.size > 0 for a in arrays)
          and min(min(pads) for pads in padding) >= 0 and min(strides) >= 1 and available())


def _ffi(target: str, shape: tuple[int, ...], padding: Padding, strides: tuple[int, int]):
  (top, _), (left, _) = padding
  call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(tuple(shape), jnp.float32),
                          vmap_method='sequential')
  return lambda *args: call(*args, pad_top=np.int64(top), pad_left=np.int64(left),
                            stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]))


def lax_forward(lhs: jnp.ndarray, rhs: jnp.ndarray, padding: Padding,
                strides: tuple[int, int] = (1, 1)) -> jnp.ndarray:
  """lax's convolution (the reference and the fallback; so are the other lax_*)."""
  return lax.conv_general_dilated(lhs, rhs, strides, padding, dimension_numbers=NHWC)


def winograd_applies(rhs_shape: tuple[int, ...], strides: tuple[int, int]) -> bool:
  """Whether `forward` and `weight_grad` take Winograd's (winograd.cc,
  winograd_weight_grad.cc) by default on this machine for a kernel `[kh, kw, C, O]`: 3x3
  at stride 1, C and O whole vectors, 32 or more of either. (At 16 in and 16 out the
  transforms cost more than the multiply-adds they save: 1.04-1.14x the direct kernel's
  time for the forward pass, ~1.1x for the weight gradient, benchmarks/README.md.)"""
  return winograd_possible(rhs_shape, strides) and max(rhs_shape[2], rhs_shape[3]) >= 32


def winograd_possible(rhs_shape: tuple[int, ...], strides: tuple[int, int]) -> bool:
  """Whether winograd.cc can compute it at all: 3x3 at stride 1, C and O whole vectors."""
  lanes = _library_lanes()
  return (tuple(rhs_shape[:2]) == (3, 3) and tuple(strides) == (1, 1) and lanes > 0
          and rhs_shape[2] % lanes == 0 and rhs_shape[3] % lanes == 0)


def _choose_winograd(caller: str, winograd: Optional[bool], rhs_shape: tuple[int, ...],
                     strides: tuple[int, int]) -> bool:
  """`winograd` resolved for a call the compiled kernels take: None by the default rule
  (and `REDCONV_CONV_KERNELS=direct`, read when tracing), True checked."""
  if winograd and not winograd_possible(rhs_shape, strides):
    raise ValueError(f'{caller}(winograd=True) needs a [3, 3, C, O] kernel at stride 1 with '
                     f'C and O multiples of {_library_lanes()}: got kernel '
                     f'{list(rhs_shape)}, strides {strides}')
  if winograd is None:
    return (winograd_applies(rhs_shape, strides)
            and os.environ.get('REDCONV_CONV_KERNELS', '').lower() != 'direct')
  return winograd


@functools.lru_cache(maxsize=None)
def _library_lanes() -> int:
  return vector_lanes() if available() else 0


def forward(lhs: jnp.ndarray, rhs: jnp.ndarray, padding: Padding,
            strides: tuple[int, int] = (1, 1), winograd: Optional[bool] = None
            ) -> jnp.ndarray:
  """`conv(lhs [N, H, W, C], rhs [kh, kw, C, O])` `[N, H', W', O]` with explicit
  `padding` ((top, bottom), (left, right)) and `strides`.

  `winograd`: None (default) takes Winograd's F(2x2, 3x3) where `winograd_applies`, 2.25x
  fewer multiply-adds than the direct kernel, unless `REDCONV_CONV_KERNELS=direct`; False
  the direct kernel (conv.cc); True Winograd's (a ValueError where it does not apply).
  The two differ by float32 rounding."""
  reference = functools.partial(lax_forward, padding=padding, strides=strides)
  if not _compiled_applies(lhs, rhs, padding=padding, strides=strides):
    if winograd:
      raise ValueError('forward(winograd=True): the compiled kernels do not apply here '
                       f'(lhs {lhs.dtype}{list(lhs.shape)}, rhs {rhs.dtype}{list(rhs.shape)}, '
                       f'padding {padding}, strides {strides})')
    return reference(lhs, rhs)
  winograd = _choose_winograd('forward', winograd, rhs.shape, strides)
  out_shape = jax.eval_shape(reference, lhs, rhs).shape
  compiled = _ffi('redconv_conv_winograd' if winograd else 'redconv_conv_forward', out_shape,
                  padding, strides)
  # Decided when lowering: CUDA and TPU lowerings contain lax's convolution only.
  return lax.platform_dependent(lhs, rhs, cpu=compiled, default=reference)


def lax_input_grad(out_grad: jnp.ndarray, rhs: jnp.ndarray, padding: Padding,
                   lhs_shape: tuple[int, ...], strides: tuple[int, int] = (1, 1)
                   ) -> jnp.ndarray:
  return jax.vjp(lambda lhs: lax_forward(lhs, rhs, padding, strides),
                 jnp.zeros(lhs_shape, rhs.dtype))[1](out_grad)[0]


def input_grad(out_grad: jnp.ndarray, rhs: jnp.ndarray, padding: Padding,
               lhs_shape: tuple[int, ...], strides: tuple[int, int] = (1, 1),
               winograd: Optional[bool] = None) -> jnp.ndarray:
  """dL/dlhs `lhs_shape` of `forward(lhs, rhs, padding, strides)` given dL/dout. At
  stride 1 the forward kernel convolves `out_grad` with the kernel flipped and its
  channels swapped, padded by kh - 1 - top (etc.); with a stride, or where those pads
  would be negative, per phase of the input (`_phase_input_grad`); lax's own gradient
  without the kernels. `winograd` as `forward`'s (for the flipped kernel; at stride 1
  with those pads non-negative only)."""
  kh, kw = rhs.shape[:2]
  (top, _), (left, _) = padding
  pads = ((kh - 1 - top, lhs_shape[1] + top - out_grad.shape[1]),
          (kw - 1 - left, lhs_shape[2] + left - out_grad.shape[2]))
  compiled = _compiled_applies(out_grad, rhs, padding=padding, strides=strides)
  direct = compiled and strides == (1, 1) and min(min(p) for p in pads) >= 0
  if winograd and not direct:
    raise ValueError('input_grad(winograd=True): the compiled kernels do not apply here '
                     f'(rhs {list(rhs.shape)}, padding {padding}, strides {strides}: '
                     'Winograd\'s input gradient is stride 1 with non-negative padding '
                     f'{pads})')
  if direct:
    flipped = jnp.swapaxes(rhs[::-1, ::-1], 2, 3)  # [kh, kw, O, C]
    return forward(out_grad, flipped, pads, winograd=winograd)
  reference = functools.partial(lax_input_grad, padding=padding, lhs_shape=lhs_shape,
                                strides=strides)
  if not compiled:
    return reference(out_grad, rhs)
  phases = functools.partial(_phase_input_grad, padding=padding, lhs_shape=lhs_shape,
                             strides=strides)
  # Decided when lowering: CUDA and TPU lowerings keep lax's one strided gradient.
  return lax.platform_dependent(out_grad, rhs, cpu=phases, default=reference)


def _phase_input_grad(out_grad: jnp.ndarray, rhs: jnp.ndarray, padding: Padding,
                      lhs_shape: tuple[int, ...], strides: tuple[int, int]) -> jnp.ndarray:
  """The input gradient of a strided convolution by the forward kernel. Input row
  p = j*s + a is read by the taps i = q + s*k, q = (a + top) mod s, of the output rows
  j + d - k, d = (a + top) // s: per phase a, the stride-1 convolution of `out_grad` with
  the flipped sub-kernel rhs[q::s] (XLA:CPU's strided gradient, a dilated-input
  convolution, took 3-5x the forward pass's time: 6 ms a layer of ResNet-20's step).
  Rows of `out_grad` a phase does not read are sliced off rather than padded negatively:
  XLA:CPU's f32 convolution reads out of bounds with a negative low padding
  (openxla/xla#48713; garbage here for a 1x1 kernel, jax 0.10.2). The phases are
  interleaved back into [N, H, W, C]; one that no tap reaches has gradient zero."""
  (sh, sw), ((top, _), (left, _)) = strides, padding
  n, h, w, c = lhs_shape
  _, out_h, out_w, _ = out_grad.shape
  rows, cols = -(-h // sh), -(-w // sw)  # per phase, padded to the longest

  def pads(taps: int, size: int, offset: int, out_size: int) -> tuple[int, int]:
    return taps - 1 - offset, size + offset - out_size  # out_grad's, before and after

  phase_rows = []
  for a in range(sh):
    phase_row = []
    for b in range(sw):
      shape = (n, len(range(a, h, sh)), len(range(b, w, sw)), c)
      taps = rhs[(a + top) % sh::sh, (b + left) % sw::sw]
      (lo_h, hi_h) = pads(taps.shape[0], shape[1], (a + top) // sh, out_h)
      (lo_w, hi_w) = pads(taps.shape[1], shape[2], (b + left) // sw, out_w)
      grad = out_grad[:, max(0, -lo_h):out_h - max(0, -hi_h),
                      max(0, -lo_w):out_w - max(0, -hi_w)]
      if 0 in shape or 0 in taps.shape or 0 in grad.shape:
        part = jnp.zeros(shape, out_grad.dtype)
      else:
        part = forward(grad, jnp.swapaxes(taps[::-1, ::-1], 2, 3),
                       ((max(lo_h, 0), max(hi_h, 0)), (max(lo_w, 0), max(hi_w, 0))))
      phase_row.append(jnp.pad(part, ((0, 0), (0, rows - shape[1]), (0, cols - shape[2]),
                                      (0, 0))))
    phase_rows.append(jnp.stack(phase_row, axis=3))  # [N, rows, cols, sw, C]
  interleaved = jnp.stack(phase_rows, axis=2)  # [N, rows, sh, cols, sw, C]
  return interleaved.reshape(n, rows * sh, cols * sw, c)[:, :h, :w]


def lax_weight_grad(lhs: jnp.ndarray, out_grad: jnp.ndarray, kernel_shape: tuple[int, ...],
                    padding: Padding, strides: tuple[int, int] = (1, 1)) -> jnp.ndarray:
  """lax's weight gradient of the same convolution (the reference and the fallback)."""
  return jax.vjp(lambda kernel: lax_forward(lhs, kernel, padding, strides),
                 jnp.zeros(kernel_shape, lhs.dtype))[1](out_grad)[0]


def weight_grad(lhs: jnp.ndarray, out_grad: jnp.ndarray, kernel_shape: tuple[int, ...],
                padding: Padding, strides: tuple[int, int] = (1, 1),
                winograd: Optional[bool] = None) -> jnp.ndarray:
  """dL/dkernel `[kh, kw, C, O]` of `forward(lhs [N, H, W, C], kernel, padding,
  strides)` given dL/dout `[N, H', W', O]`. `winograd` as `forward`'s: by default
  Winograd's F(3x3, 2x2) (winograd_weight_grad.cc) where `winograd_applies`."""
  reference = functools.partial(lax_weight_grad, kernel_shape=kernel_shape, padding=padding,
                                strides=strides)
  if not _compiled_applies(lhs, out_grad, padding=padding, strides=strides):
    if winograd:
      raise ValueError('weight_grad(winograd=True): the compiled kernels do not apply here '
                       f'(lhs {lhs.dtype}{list(lhs.shape)}, out_grad '
                       f'{out_grad.dtype}{list(out_grad.shape)}, padding {padding}, strides '
                       f'{strides})')
    return reference(lhs, out_grad)
  winograd = _choose_winograd('weight_grad', winograd, kernel_shape, strides)
  compiled = _ffi('redconv_conv_winograd_weight_grad' if winograd else
                  'redconv_conv_weight_grad', kernel_shape, padding, strides)
  # Decided when lowering: CUDA and TPU lowerings contain lax's gradient only.
  return lax.platform_dependent(lhs, out_grad, cpu=compiled, default=reference)


def vector_lanes(path: Optional[str] = None) -> int:
  """Floats per vector register in the compiled library at `path` (default: this
  machine's, `build()`): 16 with AVX-512; 8 with AVX2 or NEON."""
  return int(ctypes.CDLL(path or build()).RedconvVectorLanes())


def main() -> None:
  if available():
    path = build()
    lanes = vector_lanes(path)
    isa = {16: 'AVX-512', 8: 'AVX2 or NEON'}.get(lanes, 'unknown')
    print(f'compiled convolution kernels ({lanes}-float vectors, {isa}): {path}')
  else:
    print('lax\'s convolutions (no compiled kernels: see the warning above, or '
          'REDCONV_CONV_KERNELS=lax)')
  sys.exit(0)


if __name__ == '__main__':
  main()
