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

The gradients on CPU: the layer is the adjoint of a stride-s, s x s convolution, so
its input gradient is that convolution of the output gradient and its weight gradient
that convolution's weight gradient, both run by the compiled kernels
(models/conv_kernels). As XLA's dots they needed a transpose of the output gradient
each, and ran at a fraction of the kernels' speed: this way the U-Net's training step
does ~14 ms less work of ~400 (3-4% by a trace; -9% median in noisy A/B pairs;
benchmarks/README.md, "The upsampling's gradients"). The
forward pass stays the matrix product; GPU and TPU lowerings, and other dtypes, keep
the matrix product's own gradients.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from models import conv_kernels


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
    kernel = self.param('kernel', self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # Output row s*i + a holds input row i times tap s - 1 - a ('SAME' padding of an
    # unflipped transposed convolution), so the kernel is read back to front.
    taps = kernel[::-1, ::-1]
    if x.dtype == taps.dtype == jnp.float32 and conv_kernels.available():
      # Decided when lowering: GPU and TPU compile the matrix product and its gradients.
      y = lax.platform_dependent(x, taps, cpu=_product_with_conv_gradients,
                                 default=patch_product)
    else:
      y = patch_product(x, taps)
    if bias is not None:
      y = y + bias
    return y


def patch_product(x: jnp.ndarray, taps: jnp.ndarray) -> jnp.ndarray:
  """`[B, H, W, C]` x taps `[s, t, C, O]` -> `[B, H*s, W*t, O]`: output pixel
  (s*i + a, t*j + b) is `x[:, i, j] @ taps[a, b]`."""
  batch, height, width, _ = x.shape
  kh, kw, _, features = taps.shape
  y = jnp.einsum('nhwc,abco->nhawbo', x, taps)
  return y.reshape(batch, height * kh, width * kw, features)


@jax.custom_vjp
def _product_with_conv_gradients(x: jnp.ndarray, taps: jnp.ndarray) -> jnp.ndarray:
  return patch_product(x, taps)


def _forward(x, taps):
  return patch_product(x, taps), (x, taps)


def _backward(residuals, y_grad):
  x, taps = residuals
  kh, kw, channels, features = taps.shape
  valid = ((0, 0), (0, 0))
  # dx[i, j, c] = sum over (a, b, o) of dy[s*i + a, t*j + b, o] * taps[a, b, c, o]: a
  # stride-(s, t) convolution of dy with the kernel [s, t, O, C]; the taps' gradient is
  # that convolution's weight gradient, with the roles of dy and x as its input and
  # output gradient.
  x_grad = conv_kernels.forward(y_grad, jnp.swapaxes(taps, 2, 3), valid, (kh, kw))
  taps_grad = conv_kernels.weight_grad(y_grad, x, (kh, kw, features, channels), valid,
                                       (kh, kw))
  return x_grad, jnp.swapaxes(taps_grad, 2, 3)


_product_with_conv_gradients.defvjp(_forward, _backward)
