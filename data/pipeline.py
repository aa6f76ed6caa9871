"""Batching of feature-dict datasets for training and exact evaluation.

Training: per-epoch shuffle seeded by (seed, epoch), fixed-size batches (remainder
dropped), and `skip_batches` to resume mid-epoch at the same data position.
Evaluation: every example exactly once; the last partial batch is padded to the full
batch size and a boolean `mask` key marks the real examples, so shapes stay static.
Per-example randomness (augmentation) gets a stateless seed from
(seed, epoch, example index) under the key `seed`, never from a global RNG.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping, Optional

import numpy as np
import tensorflow as tf

Features = dict[str, tf.Tensor]
# (features, stateless seed [2] int64) -> features; runs in graph mode inside map.
AugmentFn = Callable[[Features, tf.Tensor], Features]

_EPOCH_STRIDE = 1_000_003  # keeps (epoch, index) pairs apart in the seed space


def normalize_image(features: Features, mean: float | tuple = 0.0,
                    std: float | tuple = 1.0) -> Features:
  """uint8 image -> float32 `(image / 255 - mean) / std`; other keys unchanged."""
  features = dict(features)
  image = tf.cast(features['image'], tf.float32) / 255.0
  features['image'] = (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
  return features


def example_seed(seed: int, epoch: int | tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """A stateless seed [2] int64 for one example in one epoch."""
  return tf.stack([tf.constant(seed, tf.int64),
                   tf.cast(epoch, tf.int64) * _EPOCH_STRIDE + tf.cast(index, tf.int64)])


def train_batches(dataset: tf.data.Dataset, *, batch_size: int, seed: int, epoch: int,
                  augment_fn: Optional[AugmentFn] = None,
                  preprocess_fn: Optional[Callable[[Features], Features]] = None,
                  skip_batches: int = 0, shuffle_buffer: Optional[int] = None,
                  num_shards: int = 1, shard_index: int = 0) -> tf.data.Dataset:
  """One epoch of shuffled, augmented, preprocessed batches of exactly `batch_size`.

  The order depends only on (seed, epoch), so a resumed run sees the same batches.
  `num_shards`/`shard_index` give each host its own disjoint part of every batch.
  """
  ds = dataset.enumerate()
  if shuffle_buffer is None:
    shuffle_buffer = 100_000
  ds = ds.shuffle(shuffle_buffer, seed=seed * _EPOCH_STRIDE + epoch,
                  reshuffle_each_iteration=False)

  def prepare(index, features):
    if augment_fn is not None:
      features = augment_fn(features, example_seed(seed, epoch, index))
    if preprocess_fn is not None:
      features = preprocess_fn(features)
    return features

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  if num_shards > 1:
    ds = ds.map(lambda b: {k: _host_slice(v, num_shards, shard_index) for k, v in b.items()})
  if skip_batches:
    ds = ds.skip(skip_batches)
  return ds.prefetch(tf.data.AUTOTUNE)


def _host_slice(x: tf.Tensor, num_shards: int, shard_index: int) -> tf.Tensor:
  per_host = x.shape[0] // num_shards
  return x[shard_index * per_host:(shard_index + 1) * per_host]


def eval_batches(dataset: tf.data.Dataset, *, batch_size: int,
                 preprocess_fn: Optional[Callable[[Features], Features]] = None
                 ) -> tf.data.Dataset:
  """All examples once, in order, in batches of `batch_size` with a `mask` key [B] bool."""
  ds = dataset
  if preprocess_fn is not None:
    ds = ds.map(preprocess_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.map(lambda f: {**f, 'mask': tf.constant(True)})
  ds = ds.batch(batch_size, drop_remainder=False)
  ds = ds.map(lambda b: pad_batch(b, batch_size))
  return ds.prefetch(tf.data.AUTOTUNE)


def pad_batch(batch: Features, batch_size: int) -> Features:
  """Pads every key's leading dimension to `batch_size` with zeros (mask: False)."""
  def pad(x):
    missing = batch_size - tf.shape(x)[0]
    paddings = [[0, missing]] + [[0, 0]] * (len(x.shape) - 1)
    x = tf.pad(x, paddings)
    return tf.ensure_shape(x, [batch_size] + x.shape[1:].as_list())
  return {k: pad(v) for k, v in batch.items()}


def as_numpy(dataset: tf.data.Dataset) -> Iterator[Mapping[str, np.ndarray]]:
  """Iterates a dataset as dicts of NumPy arrays (what jitted steps take)."""
  return dataset.as_numpy_iterator()
