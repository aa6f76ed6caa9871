"""Exact evaluation: per-batch sums added up over the whole set, then divided once."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import jax
import numpy as np


def accumulate(eval_fn: Callable[..., Mapping], state, batches: Iterable[Mapping]
               ) -> dict[str, np.ndarray]:
  """Adds up `eval_fn(state, batch)` over all batches (device-side, one fetch at the end)."""
  total = None
  for batch in batches:
    sums = eval_fn(state, batch)
    total = sums if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
  if total is None:
    raise ValueError('evaluation got no batches: the evaluation dataset is empty.')
  return jax.tree_util.tree_map(np.asarray, jax.device_get(total))


def means_from_sums(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
  """{'loss': sum, 'accuracy': sum, 'count': n} -> {'loss': mean, 'accuracy': mean, 'count': n}."""
  count = float(sums['count'])
  out = {k: float(v) / count for k, v in sums.items() if k != 'count' and np.ndim(v) == 0}
  out['count'] = count
  return out
