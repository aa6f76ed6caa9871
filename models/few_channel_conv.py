"""The forward pass of a convolution over few input channels (a network's first layer)
as multiply-adds: what `models/cpu_conv.py` runs on CPU when kh*kw*C <= MAX_TAPS.

Why: XLA:CPU's convolution kernels are built for many channels. The CNN's first layer
(28x28 grey images, 1 -> 32 channels, batch 128) took 5.6 CPU ms forward on a 2-core
Xeon (jax 0.10.2, Eigen convolutions; oneDNN in TensorFlow: 2.2). With C input channels
and a kh x kw kernel the output is the sum of kh*kw*C shifted input planes, each times
one row of the kernel: XLA fuses those into one elementwise loop, 1.2 CPU ms here
(benchmarks/README.md). Above `MAX_TAPS` products per output the loop loses to a real
convolution. Same function as lax's up to float32 rounding (the products are summed in
another order).
"""
from __future__ import annotations

import jax.numpy as jnp

# kh*kw*C at most: a 3x3 kernel over RGB is 27 (measured: 3.1 CPU ms forward against
# Eigen's 13.2 for ResNet-20's first layer; many more would lose to a GEMM).
MAX_TAPS = 27


def tap_sum(lhs: jnp.ndarray, rhs: jnp.ndarray,
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
