"""ResNet-50 (He et al. 2016) in torchvision's layout, for ImageNet weights and detection.

    stem   conv1 7x7/2 (64) -> bn1 -> relu -> max pool 3x3/2          stride 4
    layer1 3 bottlenecks, out 256                                      C2, stride 4
    layer2 4 bottlenecks, out 512, the first with stride 2             C3, stride 8
    layer3 6 bottlenecks, out 1024                                     C4, stride 16
    layer4 3 bottlenecks, out 2048                                     C5, stride 32
    [fc]   global average pool -> dense (only with num_classes > 0)

A bottleneck is 1x1 (w) -> 3x3 (w, the block's stride: torchvision's "v1.5", as
detectron2's `stride_in_1x1=False`) -> 1x1 (4 w), each followed by a norm, ReLU after the
first two and after the residual sum; the shortcut is a 1x1 conv (the stride) + norm
when the shape changes. Module names follow torchvision's state_dict keys
(`layer2.0.downsample.0.weight` -> `layer2_block0/downsample_conv/kernel`), which is
what models/import_torchvision.py relies on.

`norm='frozen'` (default): every BatchNorm is a FrozenBatchNorm (models/frozen_layers.py),
as detectron2 uses with ImageNet weights; `norm='batch'` trains ordinary BatchNorm
(statistics in `batch_stats`), for training from scratch. `freeze_at` (detectron2's
FREEZE_AT): 0 freezes nothing, 1 the stem, 2 the stem and layer1, ... 5 everything;
frozen convs (and their norms, whatever `norm` says) keep their variables in the
'frozen' collection, and the gradient stops at the output of the last frozen stage.

Input `[B, H, W, 3]` (torchvision's preprocessing: RGB in [0, 1], minus ImageNet mean,
over std). Output: `num_classes=0` gives the stage outputs `[C2, C3, C4, C5]`
(`[B, H / s, W / s, C]`, s = 4, 8, 16, 32, in `dtype`); `num_classes > 0` float32
logits `[B, num_classes]`. Parameters are float32; `dtype` is the compute dtype.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.frozen_layers import Conv, FrozenBatchNorm
from models.registry import MODELS

STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck widths; stage outputs are 4x these
EXPANSION = 4


def _norm(x: jnp.ndarray, train: bool, *, frozen: bool, dtype: Any, name: str) -> jnp.ndarray:
  """FrozenBatchNorm or BatchNorm (torch's eps 1e-5, momentum 0.1 = flax's 0.9), created
  in the calling module under `name` (as torchvision's `bn1`)."""
  if frozen:
    return FrozenBatchNorm(dtype=dtype, name=name)(x)
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)(x)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride) -> 1x1 with a residual; `[B, H, W, C] -> [B, H/s, W/s, 4 width]`."""
  width: int
  strides: int = 1
  frozen_norm: bool = True
  trainable: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = lambda features, k, s, name: Conv(features, k, s, self.trainable, self.dtype,
                                             name=name)
    norm = lambda y, name: _norm(y, train, frozen=self.frozen_norm, dtype=self.dtype, name=name)
    y = nn.relu(norm(conv(self.width, 1, 1, 'conv1')(x), 'bn1'))
    y = nn.relu(norm(conv(self.width, 3, self.strides, 'conv2')(y), 'bn2'))
    y = norm(conv(self.width * EXPANSION, 1, 1, 'conv3')(y), 'bn3')
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.width * EXPANSION:
      shortcut = norm(conv(self.width * EXPANSION, 1, self.strides, 'downsample_conv')(x),
                      'downsample_bn')
    return nn.relu(shortcut.astype(self.dtype) + y)


@MODELS.register('resnet50')
class ResNet50(nn.Module):
  """ResNet-50 trunk (`num_classes=0`: `[C2, C3, C4, C5]`) or classifier (logits)."""
  num_classes: int = 0
  stage_blocks: Sequence[int] = (3, 4, 6, 3)
  norm: str = 'frozen'
  freeze_at: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    if self.norm not in ('frozen', 'batch'):
      raise ValueError(f"models/resnet50.py: norm={self.norm!r}; expected 'frozen' or 'batch'.")
    if not 0 <= self.freeze_at <= 1 + len(self.stage_blocks):
      raise ValueError(f'models/resnet50.py: freeze_at={self.freeze_at}; expected 0 (nothing) '
                       f'to {1 + len(self.stage_blocks)} (every stage).')
    frozen = lambda stage: stage < self.freeze_at  # stage 0 = stem, 1 = layer1, ...
    x = Conv(STAGE_WIDTHS[0], 7, 2, not frozen(0), self.dtype, name='conv1')(x)
    x = nn.relu(_norm(x, train, frozen=self.norm == 'frozen' or frozen(0), dtype=self.dtype,
                      name='bn1'))
    # torch pads the max pool with -inf, as flax does.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    if frozen(0):
      x = jax.lax.stop_gradient(x)
    stages = []
    for i, (blocks, width) in enumerate(zip(self.stage_blocks, STAGE_WIDTHS)):
      stage = i + 1
      for j in range(blocks):
        x = Bottleneck(width, strides=2 if j == 0 and i > 0 else 1,
                       frozen_norm=self.norm == 'frozen' or frozen(stage),
                       trainable=not frozen(stage), dtype=self.dtype,
                       name=f'layer{stage}_block{j}')(x, train)
      if frozen(stage):
        x = jax.lax.stop_gradient(x)
      stages.append(x)
    if not self.num_classes:
      return stages
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(pooled).astype(jnp.float32)
