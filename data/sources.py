"""Registry of data sources and the `Source` record they return.

A source turns `(split, **config)` into an unbatched, finite `tf.data.Dataset` of
feature dicts (for classification `{'image': uint8 [H, W, C], 'label': int32 []}`)
plus what the pipeline and reports need to know about it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import tensorflow as tf

from registry import Registry

SOURCES = Registry('data source')


@dataclasses.dataclass(frozen=True)
class Source:
  dataset: tf.data.Dataset  # unbatched feature dicts, finite, in a fixed order
  num_examples: int
  class_names: Sequence[str]
  image_shape: tuple[int, int, int]  # [H, W, C]
  # Source-specific facts for evaluation, e.g. COCO's label -> category id mapping.
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def registered_sources() -> Registry:
  """SOURCES with every source module imported (each registers itself on import)."""
  from data import (cifar10, coco, coco_tfds, fashion_mnist, image_folder,  # noqa: F401
                    instance_labels, oxford_pet, seg_folder, shapes)
  return SOURCES


def build_source(data_config: Mapping[str, Any], split: str) -> Source:
  """Builds `data_config['source']` for `split`; other fields are its keyword arguments."""
  kwargs = dict(data_config)
  name = kwargs.pop('source')
  return registered_sources().get(name)(split=split, **kwargs)
