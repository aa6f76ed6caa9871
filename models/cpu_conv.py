"""The convolution the models pass to `nn.Conv(..., conv_general_dilated=...)`: lax's,
with CPU kernels of our own where XLA:CPU's are slow.

For a plain convolution (float32, NHWC / HWIO, no dilation, one group) on CPU: a 1x1
kernel without padding is a matrix product (`pointwise`); any other, a custom VJP
computes
  - the forward pass as multiply-adds when the kernel spans few inputs (kh*kw*C <=
    27, stride 1: a first layer; models/few_channel_conv.py), else with the compiled
    kernels of models/conv_kernels (Winograd's for 3x3 at stride 1 with 32 or more
    channels, the direct kernel else);
  - the weight gradient with the compiled kernels (Winograd's where the forward pass
    is), the largest cost of a conv net's step on CPU under XLA's own;
  - the input gradient as the compiled forward kernel on the flipped kernel, with a
    stride on each phase of the input's pixels (XLA drops it when nothing uses it: a
    first layer).
Where the kernels cannot be built (no C++ compiler) they are lax's. Measured per layer
and per step in benchmarks/README.md. The same function as lax's up to float32
rounding (sums in another order); the kernel keeps its shape and layout, so
checkpoints load either way. Every other convolution, and every convolution lowered
for GPU or TPU (`lax.platform_dependent`), is `lax.conv_general_dilated` itself.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from models import conv_kernels
from models.few_channel_conv import MAX_TAPS, tap_sum

Padding = conv_kernels.Padding


def _is_nhwc(dimension_numbers: Any, ndim: int) -> bool:
  if ndim != 4 or dimension_numbers is None:  # lax's default is NCHW/OIHW
    return False
  expected = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), conv_kernels.NHWC)
  given = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers)
  return tuple(given) == tuple(expected)


def _forward_value(lhs, rhs, padding: Padding, strides: tuple[int, int]):
  if strides == (1, 1) and rhs.shape[0] * rhs.shape[1] * rhs.shape[2] <= MAX_TAPS:
    return tap_sum(lhs, rhs, padding)
  return conv_kernels.forward(lhs, rhs, padding, strides)


def pointwise(lhs, rhs, strides: tuple[int, int]):
  """A 1x1 convolution without padding: `[B*H'*W', C] @ [C, O]` on every stride-th pixel.

  A matrix product and its two transposes for the gradients (XLA's dot); the direct
  kernels would spend most of their vector lanes on a few output channels (a logits
  layer: 9 ms of a U-Net step for its weight gradient alone).
  """
  return jnp.einsum('nhwc,co->nhwo', lhs[:, ::strides[0], ::strides[1], :], rhs[0, 0])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cpu_conv(lhs, rhs, padding: Padding, strides: tuple[int, int]):
  return _forward_value(lhs, rhs, padding, strides)


def _forward(lhs, rhs, padding: Padding, strides: tuple[int, int]):
  return _forward_value(lhs, rhs, padding, strides), (lhs, rhs)


def _backward(padding: Padding, strides: tuple[int, int], residuals, out_grad):
  lhs, rhs = residuals
  # XLA drops the input gradient when nothing uses it (a first layer).
  return (conv_kernels.input_grad(out_grad, rhs, padding, lhs.shape, strides),
          conv_kernels.weight_grad(lhs, out_grad, rhs.shape, padding, strides))


_cpu_conv.defvjp(_forward, _backward)


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray,
                         window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jnp.ndarray:
  """`lax.conv_general_dilated`'s signature and result; see the module doc for what it
  computes differently on CPU."""
  def lax_conv(lhs, rhs):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)

  plain = (_is_nhwc(dimension_numbers, lhs.ndim)
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and feature_group_count == 1 and batch_group_count == 1
           and lhs.dtype == rhs.dtype == jnp.float32
           and preferred_element_type in (None, jnp.float32))
  if not plain:
    return lax_conv(lhs, rhs)
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)

  def cpu_conv(lhs, rhs):
    if rhs.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
      return pointwise(lhs, rhs, strides)
    return _cpu_conv(lhs, rhs, pads, strides)

  # Decided when lowering: a GPU or TPU compiles lax's convolution only (the precision
  # argument matters to them; float32 multiply-adds on CPU are exact products).
  return lax.platform_dependent(lhs, rhs, cpu=cpu_conv, default=lax_conv)
