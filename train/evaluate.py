"""Exact evaluation: per-batch sums added up over the whole set, then divided once."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import jax
import numpy as np


def _widened(sums: Mapping) -> dict:
  """Host copies of one batch's sums: integers (and bools) as int64, floats as float64."""
  def widen(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
      return x.astype(np.int64)
    return x.astype(np.float64)
  return jax.tree_util.tree_map(widen, jax.device_get(sums))


def accumulate(eval_fn: Callable[..., Mapping], state, batches: Iterable[Mapping]
               ) -> dict[str, np.ndarray]:
  """Adds up `eval_fn(state, batch)` over all batches on the host, in int64 / float64.

  One batch's sums are exact in the device's int32 / float32; a whole set's need not be:
  an int32 confusion cell wraps past 2^31 pixels (about 1,100 images of 1024 x 2048 where
  one class dominates) and a float32 count stops being exact past 2^24. Each batch's sums
  are fetched while the next batch runs (one batch behind), so the device never waits.
  """
  total, pending = None, None
  for batch in batches:
    sums = eval_fn(state, batch)  # dispatched; computed while the previous one is fetched
    if pending is not None:
      widened = _widened(pending)
      total = widened if total is None else jax.tree_util.tree_map(np.add, total, widened)
    pending = sums
  if pending is None:
    raise ValueError('evaluation got no batches: the evaluation dataset is empty.')
  widened = _widened(pending)
  return widened if total is None else jax.tree_util.tree_map(np.add, total, widened)


def means_from_sums(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
  """{'loss': sum, 'accuracy': sum, 'count': n} -> {'loss': mean, 'accuracy': mean, 'count': n}."""
  count = float(sums['count'])
  out = {k: float(v) / count for k, v in sums.items() if k != 'count' and np.ndim(v) == 0}
  out['count'] = count
  return out
