"""Batching of feature-dict datasets for training and exact evaluation.

Training: per-epoch shuffle seeded by (seed, epoch), fixed-size batches (remainder
dropped), and `skip_batches` to resume mid-epoch at the same data position. It takes a
source's light records and its `decode` (data/sources.py): the shuffle, the skip and
the per-process shard act on the records, and only this process's remaining examples
are decoded, in the parallel map. Since tf.data's shuffle permutation depends only on
(seed, buffer size, element count), the batches are those of shuffling the decoded
examples (`source.dataset`) themselves, bit for bit (tests/data/test_lazy_decode.py).
Evaluation: every example exactly once; the last partial batch is padded to the full
batch size and a boolean `valid` key marks the real examples, so shapes stay static.
Per-example randomness (augmentation) gets a stateless seed from
(seed, epoch, example index) under the key `seed`, never from a global RNG.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import tensorflow as tf

Features = dict[str, tf.Tensor]
# (features, stateless seed [2] int64) -> features; runs in graph mode inside map.
AugmentFn = Callable[[Features, tf.Tensor], Features]

_EPOCH_STRIDE = 1_000_003  # keeps (epoch, index) pairs apart in the seed space


def example_seed(seed: int, epoch: int | tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """A stateless seed [2] int64 for one example in one epoch."""
  return tf.stack([tf.constant(seed, tf.int64),
                   tf.cast(epoch, tf.int64) * _EPOCH_STRIDE + tf.cast(index, tf.int64)])


def train_batches(dataset: tf.data.Dataset, *, batch_size: int, seed: int, epoch: int,
                  augment_fn: Optional[AugmentFn] = None,
                  preprocess_fn: Optional[Callable[[Features], Features]] = None,
                  skip_batches: int = 0, shuffle_buffer: Optional[int] = None,
                  num_shards: int = 1, shard_index: int = 0,
                  decode_fn: Optional[Callable[[Any], Features]] = None) -> tf.data.Dataset:
  """One epoch of shuffled, augmented, preprocessed batches of exactly `batch_size`.

  The order depends only on (seed, epoch), so a resumed run sees the same batches.
  `num_shards`/`shard_index` give each host its own disjoint, contiguous part of
  every global batch: examples are assigned by their position in the epoch before
  augmentation, so a host augments only its own examples, each with the seed of its
  global index, and the union of the shards is the single-host batch. Yields
  batches of `batch_size // num_shards` examples. `dataset` holds records: with a
  `decode_fn` (data/sources.py), the shuffle, the skip and the shard act on the records
  and only this host's examples of this epoch's remaining batches are decoded, in
  parallel. When the dataset's cardinality is
  unknown, stop after `num_examples // batch_size` batches (as the loop does) so that
  every host takes the same number of steps.
  """
  if batch_size % num_shards:
    raise ValueError(f'batch_size={batch_size} is not divisible by num_shards={num_shards}.')
  per_shard = batch_size // num_shards
  ds = dataset.enumerate()
  if shuffle_buffer is None:
    shuffle_buffer = 100_000
  ds = ds.shuffle(shuffle_buffer, seed=seed * _EPOCH_STRIDE + epoch,
                  reshuffle_each_iteration=False)
  cardinality = int(dataset.cardinality())
  if cardinality >= 0:  # the incomplete last global batch is dropped on every host
    ds = ds.take(cardinality // batch_size * batch_size)
  # Skipping and sharding select by position in the epoch, before the map: they cost
  # no augmentation and work for examples of different shapes.
  ds = ds.skip(skip_batches * batch_size)
  if num_shards > 1:
    ds = ds.enumerate().filter(
        lambda position, _: (position // per_shard) % num_shards == shard_index)
    ds = ds.map(lambda _, example: example)

  def prepare(index, features):
    if decode_fn is not None:
      features = decode_fn(features)
    if augment_fn is not None:
      features = augment_fn(features, example_seed(seed, epoch, index))
    if preprocess_fn is not None:
      features = preprocess_fn(features)
    return features

  if decode_fn is None and augment_fn is None and preprocess_fn is None:
    # Nothing per example: drop the index per batch. A per-example map costs ~20 us
    # an image on a CPU, which capped the pipeline below what a small model consumes.
    ds = ds.batch(per_shard, drop_remainder=True).map(lambda _, batch: batch)
  else:
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(per_shard, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(dataset: tf.data.Dataset, *, batch_size: int,
                 preprocess_fn: Optional[Callable[[Features], Features]] = None
                 ) -> tf.data.Dataset:
  """All examples once, in order, in batches of `batch_size` with a `valid` key [B] bool."""
  ds = dataset
  if preprocess_fn is not None:
    ds = ds.map(preprocess_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.map(lambda f: {**f, 'valid': tf.constant(True)})
  ds = ds.batch(batch_size, drop_remainder=False)
  ds = ds.map(lambda b: pad_batch(b, batch_size))
  return ds.prefetch(tf.data.AUTOTUNE)


def pad_batch(batch: Features, batch_size: int) -> Features:
  """Pads every key's leading dimension to `batch_size` with zeros (valid: False)."""
  def pad(x):
    missing = batch_size - tf.shape(x)[0]
    paddings = [[0, missing]] + [[0, 0]] * (len(x.shape) - 1)
    x = tf.pad(x, paddings)
    return tf.ensure_shape(x, [batch_size] + x.shape[1:].as_list())
  return {k: pad(v) for k, v in batch.items()}


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """`dataset` with tf.data's autotuning off: the same elements in the same order.

  Why: autotuning runs a model thread per iterator that re-tunes at doubling intervals
  (10 ms up to 60 s), and dropping the iterator waited for that thread's next round.
  The training loop drops each epoch's iterator, and on the 2-core machine
  `batches = None` at an epoch boundary of the main command's CNN took 18 s, with every
  thread of the process idle (strace: it returned as the old iterator's model thread
  woke and exited); 14-24 s at up to six of a run's nine (benchmarks/README.md). Without
  autotuning, `AUTOTUNE` parallelism is min(16, the tf.data thread pool's size), i.e.
  every core up to 16, and prefetch buffers grow when the consumer waits.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.with_options(options)


def as_numpy(dataset: tf.data.Dataset) -> Iterator[Mapping[str, np.ndarray]]:
  """Iterates a dataset as dicts of NumPy arrays (what jitted steps take), with
  autotuning off (`without_autotune`), so that dropping the iterator is immediate."""
  return without_autotune(dataset).as_numpy_iterator()
