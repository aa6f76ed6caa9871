"""A drop-in `lax.conv_general_dilated` that, on CPU, runs the forward pass of a
convolution over few input channels (a network's first layer) as multiply-adds.

Why: XLA:CPU's convolution kernels are built for many channels. The CNN's first layer
(28x28 grey images, 1 -> 32 channels, batch 128) took 5.6 CPU ms forward on a 2-core
Xeon (jax 0.10.2, Eigen convolutions; oneDNN in TensorFlow: 2.2). With C input channels
and a kh x kw kernel the output is the sum of kh*kw*C shifted input planes, each times
one row of the kernel: XLA fuses those into one elementwise loop, 1.2 CPU ms here
(benchmarks/README.md). Above `MAX_TAPS` products per output the loop loses to a real
convolution. The backward pass is lax's own (its weight gradient and, when asked for,
its input gradient): a dot over patches or a fused reduction was at best on a par with
it for one channel and 3-6x slower for three.

Same function up to float32 rounding (the products are summed in another order); the
kernel keeps its shape and layout, so checkpoints load either way. On other platforms,
for other dtypes, and for strides, dilations, groups or layouts other than plain NHWC /
HWIO, it is `lax.conv_general_dilated` itself.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

# kh*kw*C at most: a 3x3 kernel over RGB is 27 (measured: 3.1 CPU ms forward against
# Eigen's 13.2 for ResNet-20's first layer; many more would lose to a GEMM).
MAX_TAPS = 27

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _is_nhwc(dimension_numbers: Any, ndim: int) -> bool:
  if ndim != 4 or dimension_numbers is None:  # lax's default is NCHW/OIHW
    return False
  expected = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
  given = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers)
  return tuple(given) == tuple(expected)


def _lax_nhwc(lhs, rhs, padding):
  return lax.conv_general_dilated(lhs, rhs, (1, 1), padding, dimension_numbers=_NHWC)


def _tap_sum(lhs: jnp.ndarray, rhs: jnp.ndarray,
             padding: tuple[tuple[int, int], tuple[int, int]]) -> jnp.ndarray:
  """NHWC input, HWIO kernel, stride 1: sum over (tap, channel) of plane x kernel row."""
  _, height, width, channels = lhs.shape
  kh, kw = rhs.shape[:2]
  (top, bottom), (left, right) = padding
  padded = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
  out_h, out_w = height + top + bottom - kh + 1, width + left + right - kw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      for c in range(channels):
        # [B, out_h, out_w, 1] * [O] -> [B, out_h, out_w, O]; XLA fuses the whole sum.
        term = padded[:, i:i + out_h, j:j + out_w, c:c + 1] * rhs[i, j, c]
        out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _few_channel_conv(lhs, rhs, padding):
  return _tap_sum(lhs, rhs, padding)


def _forward(lhs, rhs, padding):
  return _tap_sum(lhs, rhs, padding), (lhs, rhs)


def _backward(padding, residuals, out_grad):
  lhs, rhs = residuals
  # lax's gradients; XLA drops the input gradient when nothing uses it (a first layer).
  return jax.vjp(lambda a, b: _lax_nhwc(a, b, padding), lhs, rhs)[1](out_grad)


_few_channel_conv.defvjp(_forward, _backward)


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray,
                         window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jnp.ndarray:
  """`lax.conv_general_dilated`'s signature and result; see the module doc for when it
  sums multiply-adds instead (pass it as `nn.Conv(..., conv_general_dilated=...)`)."""
  def lax_conv(lhs, rhs):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)

  plain = (_is_nhwc(dimension_numbers, lhs.ndim)
           and tuple(window_strides) == (1, 1)
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and feature_group_count == 1 and batch_group_count == 1
           and lhs.dtype == rhs.dtype == jnp.float32
           and preferred_element_type in (None, jnp.float32)
           and rhs.shape[0] * rhs.shape[1] * rhs.shape[2] <= MAX_TAPS)
  if not plain:
    return lax_conv(lhs, rhs)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)

  def cpu_conv(lhs, rhs):
    return _few_channel_conv(lhs, rhs, pads)

  # Decided when lowering: a GPU or TPU compiles lax's convolution only (the precision
  # argument matters to them; float32 multiply-adds on CPU are exact products).
  return lax.platform_dependent(lhs, rhs, cpu=cpu_conv, default=lax_conv)
