"""A transposed convolution whose kernel equals its stride (U-Net's 2x2 / stride 2
upsampling) as one matrix product and a depth-to-space reshape.

Why not `nn.ConvTranspose`: with kernel == stride the input pixels' output blocks do
not overlap, so output pixel (s*i + a, s*j + b) is input pixel (i, j) times one tap of
the kernel: `[B*H*W, C] @ [C, s*s*O]`. lax lowers the layer as a convolution over a
zero-dilated input instead, and on XLA:CPU its weight gradient is a
`convolution-base-dilated` with H x W windows: 40% of the U-Net's training step on a
2-core CPU (184 of 460 ms; benchmarks/README.md), where as matrix products forward,
input and weight gradients are three GEMMs.

The same function as `nn.ConvTranspose(features, (s, s), strides=(s, s))` with its
default padding ('SAME'; 'VALID' is the same layer here) and `transpose_kernel=False`,
which pads so that output (s*i + a) takes tap (s - 1 - a): hence the flipped kernel.
Same parameters, shapes, initialisers and names, so checkpoints load either way; the
forward values are the same sums, gradients agree to float32 rounding (tested).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class PatchConvTranspose(nn.Module):
  """`nn.ConvTranspose(features, kernel_size, strides=kernel_size)` for
  `[B, H, W, C]` inputs: output `[B, H*kh, W*kw, features]`."""
  features: int
  kernel_size: Sequence[int] = (2, 2)
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f'models/patch_transpose.py: input shape {x.shape}; expected '
                       '[B, H, W, C].')
    kh, kw = self.kernel_size
    batch, height, width, channels = x.shape
    kernel = self.param('kernel', self.kernel_init, (kh, kw, channels, self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # Output row s*i + a holds input row i times tap s - 1 - a ('SAME' padding of an
    # unflipped transposed convolution), so the kernel is read back to front.
    y = jnp.einsum('nhwc,abco->nhawbo', x, kernel[::-1, ::-1])
    y = y.reshape(batch, height * kh, width * kw, self.features)
    if bias is not None:
      y = y + bias
    return y
