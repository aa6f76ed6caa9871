"""Backbone for the Mask R-CNN: a small ResNet with a feature pyramid (FPN) on top.

The ResNet is a stem conv (stride `stem_stride`) followed by `len(stage_widths)`
stages of basic blocks (models/resnet.py), each halving the resolution, so stage i
has stride `stem_stride * 2 ** (i + 1)`. The FPN (Lin et al. 2017) takes every stage:
a 1x1 lateral conv to `fpn_width`, a top-down pass adding the nearest-neighbour x2
upsampled coarser level, and a 3x3 output conv. Output: one map per stage,
`[B, H / stride_l, W / stride_l, fpn_width]`, finest first.

Small images want small strides: with `stem_stride=1` and three stages, a 64x64 image
gives 32x32, 16x16 and 8x8 maps (strides 2, 4, 8), which keeps 20-pixel objects
several cells wide for the mask head. Input sides must be multiples of the coarsest
stride (the data pipeline pads to a fixed size).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.resnet import BasicBlock


def pyramid_strides(stem_stride: int, num_stages: int) -> tuple[int, ...]:
  """The stride of each FPN level, finest first."""
  return tuple(stem_stride * 2 ** (i + 1) for i in range(num_stages))


def _upsample2x(x: jnp.ndarray) -> jnp.ndarray:
  """Nearest-neighbour x2 on [B, H, W, C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


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
    strides = pyramid_strides(self.stem_stride, len(self.stage_widths))
    height, width = images.shape[1:3]
    if height % strides[-1] or width % strides[-1]:
      raise ValueError(f'models/mask_rcnn/backbone.py: image size {height}x{width} must be '
                       f'a multiple of the coarsest stride {strides[-1]} (strides {strides}); '
                       'pad the images (config.data.image_size).')
    x = nn.Conv(self.stem_width, (3, 3), strides=self.stem_stride, padding='SAME',
                use_bias=False, dtype=self.dtype, name='stem_conv')(images)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                             name='stem_norm')(x))
    stages = []
    for i, stage_width in enumerate(self.stage_widths):
      for j in range(self.blocks_per_stage):
        x = BasicBlock(stage_width, strides=2 if j == 0 else 1, dtype=self.dtype,
                       name=f'stage{i}_block{j}')(x, train)
      stages.append(x)
    laterals = [nn.Conv(self.fpn_width, (1, 1), dtype=self.dtype, name=f'fpn_lateral{i}')(c)
                for i, c in enumerate(stages)]
    top_down = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
      top_down.insert(0, lateral + _upsample2x(top_down[0]))
    return [nn.Conv(self.fpn_width, (3, 3), padding='SAME', dtype=self.dtype,
                    name=f'fpn_output{i}')(p).astype(jnp.float32)
            for i, p in enumerate(top_down)]
