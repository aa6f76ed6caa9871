"""ResNets for 32x32 inputs (CIFAR): the classic ResNet-20/56 and a fast speed-record net.

- `resnet_cifar` (He et al. 2016, section 4.2): a 3x3 stem, three stages of basic
  blocks at widths 16/32/64 (x `width_multiplier`), stride 2 between stages,
  global average pool, dense. `depth = 6 n + 2`: `resnet20` (n=3), `resnet56` (n=9).
- `fastnet`: the plain-and-wide style of the CIFAR-10 speed records (David Page's
  "ResNet-9" and Keller Jordan's airbench): few stages, each a conv then a 2x2
  pool (max, or avg: its gradient is far cheaper on XLA:CPU; pooling before BatchNorm
  saves work), then extra convs, optionally residual; global max pool; a bias-free dense head whose logits are scaled down
  (`logit_scale`), which plays the role of a softmax temperature.
  `resnet9`: Page's net (64 | 128+res | 256 | 512+res). `airbench`: widths 64/256/256,
  two convs per stage, GELU.

Every model computes in `dtype` (e.g. bfloat16) with float32 parameters and returns
float32 logits `[B, num_classes]` for inputs `[B, 32, 32, C]`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.batch_norm import BatchNorm
from models.cpu_conv import conv_general_dilated
from models.registry import MODELS

_ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    'relu': nn.relu, 'gelu': nn.gelu, 'silu': nn.silu}


def _activation(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
  if name not in _ACTIVATIONS:
    raise ValueError(f'activation={name!r}; expected one of {sorted(_ACTIVATIONS)}.')
  return _ACTIVATIONS[name]


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers plus the input (1x1 projection when the shape changes)."""
  width: int
  strides: int = 1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  # False: flax's BatchNorm gradient bit for bit (models/batch_norm.py).
  fast_norm_gradient: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = lambda w, k, s: nn.Conv(w, (k, k), strides=(s, s), padding='SAME',
                                   use_bias=False, dtype=self.dtype,
                                   conv_general_dilated=conv_general_dilated)
    norm = lambda **kw: BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                  dtype=self.dtype, fast_gradient=self.fast_norm_gradient,
                                  **kw)
    # Layers are named when built: built in this order, they keep the names (and
    # checkpoints) of the blocks that applied them in this order.
    conv_1, norm_1 = conv(self.width, 3, self.strides), norm()
    # Zero-initialised last scale: each block starts as the identity, which lets deep
    # nets (ResNet-56) train at a high learning rate from the first step.
    conv_2, norm_2 = conv(self.width, 3, 1), norm(scale_init=nn.initializers.zeros)

    def shortcut():
      if x.shape[-1] == self.width and self.strides == 1:
        return x
      return norm()(conv(self.width, 1, self.strides)(x))

    y = conv_2(norm_1(conv_1(x), relu=True))
    if self.fast_norm_gradient:
      # BatchNorm's `residual` and `relu`: nn.relu(bn(y) + shortcut) as one layer (fewer
      # passes over the activations on CPU; models/batch_norm.py).
      return norm_2(y, residual=shortcut(), relu=True)
    y = norm_2(y)  # flax's gradient, its order of operations too
    return nn.relu(shortcut() + y)


@MODELS.register('resnet_cifar')
class ResNetCifar(nn.Module):
  """He et al.'s CIFAR ResNet; `depth = 6 n + 2` with n basic blocks per stage."""
  num_classes: int = 10
  depth: int = 20
  width_multiplier: int = 1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if (self.depth - 2) % 6:
      raise ValueError(f'resnet_cifar: depth={self.depth}; expected 6 n + 2 (20, 32, 44, 56, '
                       '110).')
    blocks = (self.depth - 2) // 6
    widths = [w * self.width_multiplier for w in (16, 32, 64)]
    x = x.astype(self.dtype)
    x = nn.Conv(widths[0], (3, 3), padding='SAME', use_bias=False, dtype=self.dtype,
                conv_general_dilated=conv_general_dilated)(x)
    x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                  dtype=self.dtype)(x, relu=True)
    for stage, width in enumerate(widths):
      for b in range(blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = BasicBlock(width, strides, self.bn_momentum, self.dtype)(x, train)
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


@MODELS.register('resnet20')
def resnet20(**kwargs: Any) -> ResNetCifar:
  return ResNetCifar(depth=20, **kwargs)


@MODELS.register('resnet56')
def resnet56(**kwargs: Any) -> ResNetCifar:
  return ResNetCifar(depth=56, **kwargs)


class ConvBN(nn.Module):
  """Conv3x3 (no bias) -> [2x2 max or avg pool] -> BatchNorm -> activation."""
  width: int
  pool: str = ''
  activation: str = 'gelu'
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False, dtype=self.dtype)(x)
    if self.pool == 'max':
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    elif self.pool == 'avg':
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=1e-5, dtype=self.dtype)(x)
    return _activation(self.activation)(x)


@MODELS.register('fastnet')
class FastNet(nn.Module):
  """[stem] -> per stage [ConvBN+pool, then `extra_convs[i]` ConvBN] -> global max -> dense.

  `stem_width=0` drops the full-resolution stem: the first stage's conv reads the
  pixels (on a CPU ~3x cheaper than a 24-channel stem for the 32-64-128 net).

  `residual`: the extra convs of a stage are added to their input (Page's ResNet-9)
  instead of simply stacked (airbench). A stage with 0 extra convs is plain.
  Input `[B, H, W, C]` (H, W divisible by 2**len(widths)), logits `[B, num_classes]`.
  """
  num_classes: int = 10
  stem_width: int = 32
  widths: Sequence[int] = (64, 256, 256)
  extra_convs: Sequence[int] = (1, 1, 1)
  residual: bool = False
  pool: str = 'max'
  activation: str = 'gelu'
  logit_scale: float = 1 / 9
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if len(self.extra_convs) != len(self.widths):
      raise ValueError(f'fastnet: extra_convs={tuple(self.extra_convs)} needs one entry per '
                       f'stage of widths={tuple(self.widths)}.')
    layer = lambda width, pool='': ConvBN(width, pool, self.activation, self.bn_momentum,
                                             self.dtype)
    x = x.astype(self.dtype)
    if self.stem_width:  # 0: the first stage's conv reads the pixels directly (cheaper)
      x = layer(self.stem_width)(x, train)
    for width, extra in zip(self.widths, self.extra_convs):
      x = layer(width, pool=self.pool)(x, train)
      y = x
      for _ in range(extra):
        y = layer(width)(y, train)
      x = x + y if self.residual and extra else y
    x = x.max(axis=(1, 2))
    x = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype)(x)
    return (x * self.logit_scale).astype(jnp.float32)


@MODELS.register('resnet9')
def resnet9(**kwargs: Any) -> FastNet:
  """David Page's DAWNBench net (94% in 24 epochs): ReLU, residual stages 1 and 3."""
  defaults = dict(stem_width=64, widths=(128, 256, 512), extra_convs=(2, 0, 2),
                  residual=True, activation='relu', logit_scale=0.125)
  return FastNet(**{**defaults, **kwargs})


@MODELS.register('airbench')
def airbench(**kwargs: Any) -> FastNet:
  """The airbench94 layout (64/256/256, two convs a stage, GELU), with a learned stem."""
  defaults = dict(stem_width=24, widths=(64, 256, 256), extra_convs=(1, 1, 1),
                  residual=False, activation='gelu', logit_scale=1 / 9)
  return FastNet(**{**defaults, **kwargs})
