"""Backbones for the Mask R-CNN: a ResNet with a feature pyramid (FPN) on top.

The FPN (Lin et al. 2017) takes every stage: a 1x1 lateral conv to `fpn_width`, a
top-down pass adding the nearest-neighbour x2 upsampled coarser level, and a 3x3
output conv. Output: one map per level, `[B, H / stride_l, W / stride_l, fpn_width]`,
finest first, in the compute `dtype` (bfloat16 flows on into the RPN and RoI heads).

- `ResNetFPN` ('resnet_fpn', the default): a stem conv (stride `stem_stride`) and
  `len(stage_widths)` stages of basic blocks (models/resnet.py), each halving the
  resolution, so stage i has stride `stem_stride * 2 ** (i + 1)`. Small images want
  small strides: with `stem_stride=1` and three stages, a 64x64 image gives 32x32,
  16x16 and 8x8 maps (strides 2, 4, 8), which keeps 20-pixel objects several cells
  wide for the mask head. For training from scratch.
- `ResNet50FPN` ('resnet50_fpn'): detectron2's R50-FPN: the ResNet-50 of
  models/resnet50.py (frozen BatchNorm, `freeze_at`; ImageNet weights through
  models/import_torchvision.py), the FPN on C2-C5, and P6 = P5 subsampled by 2
  (detectron2's LastLevelMaxPool, kernel 1), used by the RPN only. Strides 4..64.
Input sides must be multiples of the coarsest stride of the FPN (the data pipeline
pads to a fixed size).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.resnet import BasicBlock
from models.resnet50 import ResNet50

# ResNet50FPN: P2-P5 (pooled by the RoI heads) and P6 (the RPN's largest anchors).
RESNET50_FPN_STRIDES = (4, 8, 16, 32, 64)


def pyramid_strides(stem_stride: int, num_stages: int) -> tuple[int, ...]:
  """The stride of each FPN level, finest first."""
  return tuple(stem_stride * 2 ** (i + 1) for i in range(num_stages))


def _upsample2x(x: jnp.ndarray) -> jnp.ndarray:
  """Nearest-neighbour x2 on [B, H, W, C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _check_size(images: jnp.ndarray, strides: Sequence[int]) -> None:
  height, width = images.shape[1:3]
  if height % strides[-1] or width % strides[-1]:
    raise ValueError(f'models/mask_rcnn/backbone.py: image size {height}x{width} must be '
                     f'a multiple of the coarsest stride {strides[-1]} (strides {strides}); '
                     'pad the images (config.data.image_size).')


def _fpn(stages: Sequence[jnp.ndarray], width: int, dtype: Any) -> list[jnp.ndarray]:
  """The FPN's laterals, top-down sums and output convs, as submodules of the calling
  module (`fpn_lateral{i}`, `fpn_output{i}`); outputs in `dtype`, finest first."""
  laterals = [nn.Conv(width, (1, 1), dtype=dtype, name=f'fpn_lateral{i}')(c)
              for i, c in enumerate(stages)]
  top_down = [laterals[-1]]
  for lateral in reversed(laterals[:-1]):
    top_down.insert(0, lateral + _upsample2x(top_down[0]))
  return [nn.Conv(width, (3, 3), padding='SAME', dtype=dtype, name=f'fpn_output{i}')(p)
          for i, p in enumerate(top_down)]


class ResNetFPN(nn.Module):
  """ResNet stages + FPN; returns a list of `[B, H_l, W_l, fpn_width]`, finest first."""
  stem_width: int = 32
  stage_widths: Sequence[int] = (32, 64, 128)
  blocks_per_stage: int = 1
  stem_stride: int = 1
  fpn_width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> list[jnp.ndarray]:
    _check_size(images, pyramid_strides(self.stem_stride, len(self.stage_widths)))
    x = nn.Conv(self.stem_width, (3, 3), strides=self.stem_stride, padding='SAME',
                use_bias=False, dtype=self.dtype, name='stem_conv')(images)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                             name='stem_norm')(x))
    stages = []
    for i, stage_width in enumerate(self.stage_widths):
      for j in range(self.blocks_per_stage):
        # flax's own BatchNorm gradient: the instance results recorded with it (37-60
        # min runs) stay reproducible bit for bit.
        x = BasicBlock(stage_width, strides=2 if j == 0 else 1, dtype=self.dtype,
                       fast_norm_gradient=False, name=f'stage{i}_block{j}')(x, train)
      stages.append(x)
    return _fpn(stages, self.fpn_width, self.dtype)


class ResNet50FPN(nn.Module):
  """ResNet-50 + FPN + P6; returns `[P2, ..., P6]`, `[B, H / s, W / s, fpn_width]` for s in
  RESNET50_FPN_STRIDES, in `dtype`. The trunk is the submodule `trunk` (its variables
  are where models/import_torchvision.py puts ImageNet weights)."""
  fpn_width: int = 256
  freeze_at: int = 2
  norm: str = 'frozen'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> list[jnp.ndarray]:
    # P6 is a subsampling of P5, so only P5's stride 32 constrains the size.
    _check_size(images, RESNET50_FPN_STRIDES[:-1])
    stages = ResNet50(norm=self.norm, freeze_at=self.freeze_at, dtype=self.dtype,
                      name='trunk')(images, train)
    pyramid = _fpn(stages, self.fpn_width, self.dtype)
    return pyramid + [pyramid[-1][:, ::2, ::2]]  # max pool, kernel 1, stride 2
