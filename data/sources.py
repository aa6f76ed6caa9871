"""Registry of data sources and the `Source` record they return.

A source turns `(split, **config)` into an unbatched, finite `tf.data.Dataset` of
records in a fixed order, a `decode` function from a record to a feature dict (for
classification `{'image': uint8 [H, W, C], 'label': int32 []}`), and what the pipeline
and reports need to know about it.

Records are light (file names, annotation indices, encoded bytes): the training
pipeline shuffles, shards per process and skips to a resume point on records, and only
then decodes, in parallel (data/pipeline.py). A source whose examples already live in
memory as arrays has no `decode`: its records are its feature dicts.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

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
  # record -> feature dict, TF ops only (it runs in a parallel tf.data map); None: the
  # records are the feature dicts.
  decode: Optional[Callable[[Any], Mapping[str, tf.Tensor]]] = None

  @property
  def dataset(self) -> tf.data.Dataset:
    """The decoded feature dicts, in order (evaluation, reports)."""
    if self.decode is None:
      return self.records
    return self.records.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


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
