"""Exact evaluation sums: accumulated on the host in int64 / float64, so neither a
confusion cell past 2^31 nor a pixel count past 2^24 loses anything."""
import jax.numpy as jnp
import numpy as np
import pytest

from train import evaluate


def _batches_of(per_batch):
  """An eval_fn returning the given device sums for batch k, and the batches 0..n-1."""
  def eval_fn(state, batch):
    del state
    return per_batch[batch]
  return eval_fn, range(len(per_batch))


def test_int32_confusion_counts_sum_past_2_to_the_31_exactly():
  # Per batch, one class dominates: 2^30 pixels in one cell (fits int32 on the device).
  cell = 2 ** 30
  per_batch = [{'confusion': jnp.array([[cell, k], [0, cell - 1]], jnp.int32)} for k in range(5)]
  eval_fn, batches = _batches_of(per_batch)
  total = evaluate.accumulate(eval_fn, None, batches)
  assert total['confusion'].dtype == np.int64
  np.testing.assert_array_equal(total['confusion'], [[5 * cell, 10], [0, 5 * (cell - 1)]])
  assert total['confusion'][0, 0] > 2 ** 31 - 1  # int32 would have wrapped negative


def test_float32_counts_sum_past_2_to_the_24_exactly():
  # float32: 2^24 + 1 == 2^24. On the host in float64 every added pixel counts.
  per_batch = [{'pixels': jnp.float32(2 ** 24), 'loss': jnp.float32(0.5)},
               {'pixels': jnp.float32(1), 'loss': jnp.float32(0.25)},
               {'pixels': jnp.float32(1), 'loss': jnp.float32(0.25)}]
  eval_fn, batches = _batches_of(per_batch)
  total = evaluate.accumulate(eval_fn, None, batches)
  assert total['pixels'].dtype == np.float64 and total['pixels'] == 2 ** 24 + 2
  assert total['loss'] == 1.0


def test_a_single_batch_and_no_batch():
  eval_fn, batches = _batches_of([{'count': jnp.int32(3), 'valid': jnp.array([True, False])}])
  total = evaluate.accumulate(eval_fn, None, batches)
  assert total['count'] == 3 and total['count'].dtype == np.int64
  np.testing.assert_array_equal(total['valid'], [1, 0])
  with pytest.raises(ValueError, match='evaluation dataset is empty'):
    evaluate.accumulate(eval_fn, None, [])
