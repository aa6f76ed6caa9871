"""Registry of data sources and the `Source` record they return.

A source turns `(split, **config)` into an unbatched, finite `tf.data.Dataset` of
records in a fixed order, a `decode` function from a record to a feature dict (for
classification `{'image': uint8 [H, W, C], 'label': int32 []}`), and what the pipeline
and reports need to know about it.

Records are light (file names, annotation indices, encoded bytes): the training
pipeline shuffles, shards per process and skips to a resume point on records, and only
then decodes, in parallel (data/pipeline.py). A source whose examples already live in
memory as arrays has no `decode`: its records are its feature dicts.

What a source provides: `records`, a dataset of known cardinality whose elements are one
tensor or a dict of tensors (never a tuple: `Dataset.map` would unpack it), the same
records in the same order on every build; and `decode(record)`, built from TF ops, or
from Python through `numpy_decode` where only a Python library (PIL, pycocotools)
gives today's exact values. The data order contract rests on this: tf.data's shuffle
permutation depends only on (seed, buffer size, element count), so shuffling records
puts the decoded examples in the order shuffling the examples themselves would.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from registry import Registry

SOURCES = Registry('data source')


@dataclasses.dataclass(frozen=True)
class Source:
  records: tf.data.Dataset  # unbatched records, finite, in a fixed order
  num_examples: int
  class_names: Sequence[str]
  image_shape: tuple[int, int, int]  # [H, W, C]
  # Source-specific facts for evaluation, e.g. COCO's label -> category id mapping.
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # record -> feature dict, in graph mode (it runs in a parallel tf.data map): TF ops, or
  # Python through `numpy_decode`; None: the records are the feature dicts.
  decode: Optional[Callable[[Any], Mapping[str, tf.Tensor]]] = None

  @property
  def dataset(self) -> tf.data.Dataset:
    """The decoded feature dicts, in order (evaluation, reports)."""
    if self.decode is None:
      return self.records
    return self.records.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


def numpy_decode(load: Callable[..., Mapping[str, np.ndarray]],
                 signature: Mapping[str, tf.TensorSpec]) -> Callable[[Any], dict[str, tf.Tensor]]:
  """A `Source.decode` running Python `load(**record)` (NumPy values) in a tf.data map.

  `load` takes the record's fields as keyword arguments (scalars as Python values,
  strings as bytes; others as NumPy arrays) and returns the features of `signature`,
  each of its dtype and shape. It runs under `tf.numpy_function`: parallel map calls
  overlap where `load` releases the GIL (file reads, PIL decoding and resizing), and its
  exceptions surface as `tf.errors.OpError` with their message (which names the file).
  """
  keys = tuple(signature)

  def decode(record: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    fields = tuple(record)

    def run(*values):
      # Graph mode passes NumPy scalars, eager mode 0-d arrays: both become Python values.
      example = load(**{f: np.asarray(v).item() if np.ndim(v) == 0 else v
                        for f, v in zip(fields, values)})
      return [np.asarray(example[k], signature[k].dtype.as_numpy_dtype) for k in keys]

    values = tf.numpy_function(run, [record[f] for f in fields],
                               [signature[k].dtype for k in keys], stateful=False)
    values = tf.nest.flatten(values)  # eager mode returns a lone output unlisted
    return {k: tf.ensure_shape(v, signature[k].shape) for k, v in zip(keys, values)}

  return decode


def registered_sources() -> Registry:
  """SOURCES with every source module imported (each registers itself on import)."""
  from data import (cifar10, coco, coco_records_source, coco_tfds,  # noqa: F401
                    fashion_mnist, image_folder, instance_labels, oxford_pet, seg_folder,
                    shapes)
  return SOURCES


def build_source(data_config: Mapping[str, Any], split: str) -> Source:
  """Builds `data_config['source']` for `split`; other fields are its keyword arguments."""
  kwargs = dict(data_config)
  name = kwargs.pop('source')
  return registered_sources().get(name)(split=split, **kwargs)
