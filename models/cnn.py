"""A small convolutional network: conv blocks with BatchNorm and pooling, dense head."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.batch_norm import BatchNorm
from models.cpu_conv import conv_general_dilated
from models.registry import MODELS


@MODELS.register('cnn')
class CNN(nn.Module):
  """Per block: `convs_per_block` x [Conv3x3 -> BatchNorm -> ReLU], then 2x2 max-pool.

  Then flatten -> Dense(dense_width) -> ReLU -> Dropout -> Dense(num_classes).
  Input `[B, H, W, C]` float, output logits `[B, num_classes]`. The same 3x3 filters
  slide over every position, so a pattern is recognised wherever it appears.
  """
  num_classes: int = 10
  widths: Sequence[int] = (32, 64)
  convs_per_block: int = 1
  dense_width: int = 256
  dropout_rate: float = 0.3
  dtype: Any = jnp.float32
  # Under pmap, the mapped axis name: BatchNorm then averages its batch statistics
  # across devices, so N devices x B/N examples match one device with B examples.
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = x.astype(self.dtype)
    for width in self.widths:
      for i in range(self.convs_per_block):
        # No conv bias: BatchNorm's shift makes it redundant. On CPU our own kernels run
        # the first layer's forward pass and every weight gradient (cpu_conv.py).
        x = nn.Conv(width, (3, 3), padding='SAME', use_bias=False, dtype=self.dtype,
                    conv_general_dilated=conv_general_dilated)(x)
        # BatchNorm then ReLU as one layer, and at the block's end the 2x2 max-pooling
        # too (models/pooling.py: nn.max_pool's function and gradient, about 2x faster
        # to train on XLA:CPU); fewer passes on CPU (batch_norm.py).
        x = BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                      axis_name=self.bn_axis_name if train else None)(
                          x, relu=True, pool=i == self.convs_per_block - 1)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense_width, dtype=self.dtype)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
