"""Test-time flip averaging: a wrapper around any classifier."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class FlipAveraged(nn.Module):
  """Wraps a classifier: in evaluation (`train=False`) the logits `[B, K]` are the mean
  of those of the images and of their left-right mirror images; training is unchanged.
  The wrapped model's parameters live under 'model'.

  `dtype` (None: the wrapped model's own) is passed on to the wrapped model, so the
  loop's `config.compute_dtype` reaches it through the wrapper.
  """
  model: nn.Module
  enabled: bool = True
  dtype: Any = None

  def __post_init__(self):
    if self.dtype is not None and getattr(self.model, 'dtype', None) != self.dtype:
      # Before flax binds `model` as the submodule 'model' (same parameter names).
      object.__setattr__(self, 'model', self.model.clone(dtype=self.dtype))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if train or not self.enabled:
      return self.model(x, train=train)
    logits = self.model(jnp.concatenate([x, x[:, :, ::-1]]), train=False)
    plain, mirrored = jnp.split(logits, 2)
    return (plain + mirrored) / 2
