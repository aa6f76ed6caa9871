"""Layers whose variables are not trained: frozen BatchNorm, and a conv that can be frozen.

Both keep their frozen variables in the `'frozen'` collection, not in `'params'`, as
detectron2 keeps them as buffers rather than parameters. What is not in `'params'` gets
no gradient, no optimizer state and no weight decay, whatever the optimizer config
says (a `stop_gradient` alone would still let decoupled weight decay and momentum move
the weights); the train step carries the collection unchanged beside `batch_stats`
(train/steps.py: every non-params collection is passed in and returned), and
checkpoints save it with the rest of `model_state`.

- `FrozenBatchNorm`: `y = x * scale / sqrt(var + eps) + bias - mean * scale / sqrt(var
  + eps)` with fixed `scale`, `bias`, `mean`, `var` (initialised to the identity: 1, 0, 0,
  1): BatchNorm in inference mode, in training too. The usual choice when starting from
  ImageNet weights with a few images per device, where batch statistics are noise.
- `Conv`: a bias-free conv with torch's symmetric padding (`kernel_size // 2` on every
  side, not XLA's 'SAME', which pads a stride-2 conv only after), so imported torch
  weights see the same pixels; `trainable=False` puts its kernel in `'frozen'`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

FROZEN = 'frozen'
# torchvision's init of ResNet convs: kaiming_normal_(mode='fan_out', nonlinearity='relu').
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class FrozenBatchNorm(nn.Module):
  """BatchNorm with fixed statistics and affine, all in the 'frozen' collection."""
  epsilon: float = 1e-5  # torch's BatchNorm2d default
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = (x.shape[-1],)
    frozen = lambda name, init: self.variable(FROZEN, name, init, channels, jnp.float32).value
    scale, bias = frozen('scale', jnp.ones), frozen('bias', jnp.zeros)
    mean, var = frozen('mean', jnp.zeros), frozen('var', jnp.ones)
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    offset = bias - mean * multiplier
    return x.astype(self.dtype) * multiplier.astype(self.dtype) + offset.astype(self.dtype)


class Conv(nn.Module):
  """`[B, H, W, C] -> [B, H / s, W / s, features]`, kernel `[k, k, C, features]` (HWIO)."""
  features: int
  kernel_size: int
  strides: int = 1
  trainable: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
    if self.trainable:
      kernel = self.param('kernel', KAIMING_FAN_OUT, shape, jnp.float32)
    else:
      kernel = self.variable(FROZEN, 'kernel',
                             lambda: KAIMING_FAN_OUT(self.make_rng('params'), shape)).value
    pad = self.kernel_size // 2
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), (self.strides, self.strides),
        ((pad, pad), (pad, pad)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
