"""Oxford-IIIT Pet (Parkhi et al. 2012) through TFDS: pets with trimap masks.

TFDS `oxford_iiit_pet` (3,680 'train', 3,669 'test' images of varying size) gives a
trimap `segmentation_mask` [H, W, 1] with 1 = pet, 2 = background, 3 = border (the
uncertain outline). This source resizes every example to `image_size` (bilinear
image, nearest mask) so batches have one shape, and maps the trimap to
  target='semantic': 0 = background, 1 = pet, 2 = border (3 classes);
  target='binary':   0 = background, 1 = pet, the border as `border` says
                     ('ignore' -> `ignore_id`, 'foreground' or 'background').
Any other trimap value (none in the real data) becomes `ignore_id`.
Needs the data (downloaded by TFDS when online, or prepared in `tfds_data_dir`).
The records are the encoded image and trimap PNG bytes (`tfds.decode.SkipDecoding`);
`Source.decode` decodes them with the features' own `decode_example` (what TFDS does
when it decodes) and resizes, after the training pipeline's shuffle, shard and skip.
"""
from __future__ import annotations

from typing import Any, Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from data.sources import SOURCES, Source

SEMANTIC_CLASSES = ('background', 'pet', 'border')
BINARY_CLASSES = ('background', 'pet')


def trimap_table(target: str, border: str, ignore_id: int) -> list[int]:
  """Class id for trimap values 0..3 (index = trimap value)."""
  if target == 'semantic':
    return [ignore_id, 1, 0, 2]
  if target != 'binary':
    raise ValueError(f"oxford_pet: config.data.target={target!r}; expected 'semantic' or "
                     "'binary'.")
  border_id = {'ignore': ignore_id, 'foreground': 1, 'background': 0}.get(border)
  if border_id is None:
    raise ValueError(f"oxford_pet: config.data.border={border!r}; expected 'ignore', "
                     "'foreground' or 'background'.")
  return [ignore_id, 1, 0, border_id]


def map_trimap(trimap: tf.Tensor, table: Sequence[int], ignore_id: int) -> tf.Tensor:
  """uint8 trimap [H, W] -> int32 class ids [H, W] (values above 3 -> ignore_id)."""
  values = tf.cast(trimap, tf.int32)
  in_range = values <= 3
  mapped = tf.gather(tf.constant(list(table), tf.int32), tf.minimum(values, 3))
  return tf.where(in_range, mapped, ignore_id)


@SOURCES.register('oxford_pet')
def oxford_pet_source(split: str, image_size: Sequence[int] = (128, 128),
                      target: str = 'semantic', border: str = 'ignore', ignore_id: int = 255,
                      tfds_data_dir: str | None = None, **unused: Any) -> Source:
  """`{'image': uint8 [H, W, 3], 'mask': int32 [H, W]}` at `image_size`; split 'val' = 'test'."""
  table = trimap_table(target, border, ignore_id)
  height, width = (int(d) for d in image_size)
  tfds_split = 'test' if split in ('val', 'validation') else split
  builder = tfds.builder('oxford_iiit_pet', data_dir=tfds_data_dir)
  builder.download_and_prepare()
  encoded = ('image', 'segmentation_mask')
  records = builder.as_dataset(split=tfds_split, shuffle_files=False,
                               decoders={k: tfds.decode.SkipDecoding() for k in encoded})
  num_examples = int(records.cardinality())
  if num_examples < 0:
    num_examples = builder.info.splits[tfds_split].num_examples
  records = records.map(lambda example: {k: example[k] for k in encoded})
  features = builder.info.features

  def decode(record):
    image = features['image'].decode_example(record['image'])
    image = tf.image.resize(image, (height, width), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    trimap = features['segmentation_mask'].decode_example(record['segmentation_mask'])
    trimap = tf.image.resize(trimap, (height, width), method='nearest')[..., 0]
    return {'image': tf.ensure_shape(image, (height, width, 3)),
            'mask': tf.ensure_shape(map_trimap(trimap, table, ignore_id), (height, width))}

  names = SEMANTIC_CLASSES if target == 'semantic' else BINARY_CLASSES
  return Source(records, num_examples, names, (height, width, 3), decode=decode)
