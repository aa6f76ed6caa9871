"""U-Net (Ronneberger et al. 2015) for semantic and binary segmentation.

An encoder of `depth` downsampling levels (convs, then 2x2 max-pool) mirrored by a
decoder (upsample, concatenate the skip connection of the same resolution, convs),
ending in a 1x1 conv to per-pixel logits `[B, H, W, num_classes]`:
`num_classes=1` for binary segmentation (sigmoid), C for semantic (softmax).

Sizes not divisible by 2^depth: the input is padded at the bottom and right up to
the next multiple of 2^depth (mirror padding where the side allows it, else edge
replication, so no artificial black border appears), run through the net, and the
logits are cropped back to the input's H x W. Every output pixel therefore
corresponds to the input pixel at the same position, for any input size.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.batch_norm import BatchNorm
from models.cpu_conv import conv_general_dilated
from models.patch_transpose import PatchConvTranspose
from models.pooling import max_pool_2x2
from models.registry import MODELS

NORMS = ('batch', 'group', 'none')
UPSAMPLES = ('transpose', 'resize')


def pad_to_multiple(x: jnp.ndarray, multiple: int) -> tuple[jnp.ndarray, tuple[int, int]]:
  """Pads `[B, H, W, C]` at the bottom/right to sides divisible by `multiple`.

  Returns the padded array and the original (H, W) to crop back to.
  """
  h, w = x.shape[1], x.shape[2]
  pad_h, pad_w = -h % multiple, -w % multiple
  if pad_h or pad_w:
    # Mirror padding needs pad < side; tiny inputs fall back to edge replication.
    mode = 'reflect' if pad_h < h and pad_w < w else 'edge'
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
  return x, (h, w)


class ConvBlock(nn.Module):
  """`num_convs` x [Conv3x3 -> norm -> ReLU]."""
  width: int
  num_convs: int = 2
  norm: str = 'batch'
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for _ in range(self.num_convs):
      # A conv bias is redundant before a normalisation's shift. On CPU our own kernels
      # run the forward pass and the gradients (cpu_conv.py).
      x = nn.Conv(self.width, (3, 3), padding='SAME', use_bias=self.norm == 'none',
                  dtype=self.dtype, conv_general_dilated=conv_general_dilated)(x)
      if self.norm == 'batch':
        # BatchNorm then ReLU as one layer (fewer passes on CPU; batch_norm.py).
        x = BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                      axis_name=self.bn_axis_name if train else None)(x, relu=True)
      elif self.norm == 'group':
        x = nn.relu(nn.GroupNorm(num_groups=min(8, self.width), dtype=self.dtype)(x))
      else:
        x = nn.relu(x)
    return x


@MODELS.register('unet')
class UNet(nn.Module):
  """Input `[B, H, W, C]` float (any H, W), output float32 logits `[B, H, W, num_classes]`.

  depth: number of 2x downsamplings; level l (0..depth) has width
    `min(base_width * 2**l, max_width)`.
  norm: 'batch' (BatchNorm, running averages in evaluation), 'group' (GroupNorm,
    batch-size independent) or 'none'.
  dropout_rate: dropout on the bottleneck features (the original U-Net's place).
  upsample: 'transpose' (learned 2x2 stride-2 transposed conv) or 'resize'
    (nearest-neighbour 2x resize then a 3x3 conv: no checkerboard artefacts).
  dtype: compute dtype (e.g. bfloat16); parameters and logits stay float32.
  """
  num_classes: int = 2
  depth: int = 4
  base_width: int = 32
  max_width: int = 512
  convs_per_level: int = 2
  norm: str = 'batch'
  dropout_rate: float = 0.0
  upsample: str = 'transpose'
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  def _width(self, level: int) -> int:
    return min(self.base_width * 2 ** level, self.max_width)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if self.norm not in NORMS:
      raise ValueError(f'models/unet.py: norm={self.norm!r}; expected one of {NORMS}.')
    if self.upsample not in UPSAMPLES:
      raise ValueError(f'models/unet.py: upsample={self.upsample!r}; expected one of '
                       f'{UPSAMPLES}.')
    if x.ndim != 4:
      raise ValueError(f'models/unet.py: input shape {x.shape}; expected [B, H, W, C].')
    x, (height, width) = pad_to_multiple(x.astype(self.dtype), 2 ** self.depth)
    block = lambda level: ConvBlock(self._width(level), self.convs_per_level, self.norm,
                                    self.dtype, self.bn_axis_name)
    skips = []
    for level in range(self.depth):
      x = block(level)(x, train)
      skips.append(x)
      x = max_pool_2x2(x)
    x = block(self.depth)(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for up, level in enumerate(reversed(range(self.depth))):
      features = self._width(level)
      if self.upsample == 'transpose':
        # nn.ConvTranspose(features, (2, 2), strides=(2, 2)) as a matrix product
        # (patch_transpose.py), under nn.ConvTranspose's name: checkpoints load as before.
        x = PatchConvTranspose(features, (2, 2), dtype=self.dtype,
                               name=f'ConvTranspose_{up}')(x)
      else:
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method='nearest')
        x = nn.Conv(features, (3, 3), padding='SAME', dtype=self.dtype,
                    conv_general_dilated=conv_general_dilated)(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = block(level)(x, train)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                     conv_general_dilated=conv_general_dilated)(x)
    return logits[:, :height, :width, :].astype(jnp.float32)
