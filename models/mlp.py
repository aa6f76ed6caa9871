"""A multi-layer perceptron: dense layers only, the baseline that ignores image structure."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.registry import MODELS


@MODELS.register('mlp')
class MLP(nn.Module):
  """Flatten -> [Dense -> ReLU -> Dropout] * len(hidden_widths) -> Dense(num_classes).

  Input `[B, H, W, C]` float, output logits `[B, num_classes]`. Every pixel gets its
  own weights, so the model learns positions, not patterns (see dense_vs_conv).
  """
  num_classes: int = 10
  hidden_widths: Sequence[int] = (512, 256)
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for width in self.hidden_widths:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
