"""COCO 2017 through TFDS (`coco/2017`), mapped to the keys of data/coco.py.

LIMITATION: TFDS `coco/2017` has boxes, labels and `is_crowd` but NO segmentation
masks, so `instance_masks` is all zeros and `Source.metadata['has_masks']` is False.
Use it for box-only work; for instance masks use the `coco_json` source (data/coco.py)
on the COCO JSON files.

TFDS gives `bbox` as normalised (ymin, xmin, ymax, xmax) and labels 0..79 in ascending
COCO category id order. They become `boxes` boxes_xyxy in absolute pixels of the
resized image and `classes` = label + 1, after the same resize-to-fit and bottom/right
zero padding as data/coco.py (bilinear, antialiased); `metadata['category_ids']` maps
labels back to COCO's ids. More than `max_instances` objects: the largest non-crowd ones
are kept, then crowd, silently (the map runs in-graph; COCO 2017 has at most 93
objects an image, so keep max_instances >= 100 to lose none). Splits: 'train',
'val' (= TFDS 'validation'), 'test' (no objects). Only reads a prepared data set: it
never starts TFDS's ~25 GB download.

The records are TFDS's examples with the image left encoded (`tfds.decode.SkipDecoding`:
JPEG bytes, the boxes, labels and ids as they are); `Source.decode` decodes the image
with the feature's own `decode_example` (what TFDS does when it decodes) and converts
the example, after the training pipeline's shuffle, shard and skip.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from data.coco import output_signature
from data.sources import SOURCES, Source

# COCO 2017's 80 category ids in ascending order: label k + 1 <-> COCO_CATEGORY_IDS[k].
COCO_CATEGORY_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66),
                     67, 70, *range(72, 83), *range(84, 91))


def _group_order(crowd: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """`indices` reordered non-crowd first, then crowd, keeping their relative order."""
  return tf.gather(indices, tf.argsort(tf.cast(tf.gather(crowd, indices), tf.int32),
                                       stable=True))


def convert_example(example: Mapping[str, Any], image_size: Sequence[int],
                    max_instances: int) -> dict[str, tf.Tensor]:
  """A TFDS coco/2017 example -> the data/coco.py features (zero instance masks).

  example: {'image': uint8 [h, w, 3], 'image/id': int64 [], 'objects': {'bbox':
    float32 [n, 4] normalised yxyx, 'label': int64 [n], 'is_crowd': bool [n],
    'area': int64 [n] (optional)}}.
  """
  out_height, out_width = (int(d) for d in image_size)
  image = tf.convert_to_tensor(example['image'])
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  scale = tf.minimum(out_height / height_f, out_width / width_f)
  resized_height = tf.clip_by_value(
      tf.cast(tf.floor(height_f * scale + 0.5), tf.int32), 1, out_height)
  resized_width = tf.clip_by_value(
      tf.cast(tf.floor(width_f * scale + 0.5), tf.int32), 1, out_width)
  resized = tf.image.resize(image, tf.stack([resized_height, resized_width]),
                            antialias=True)
  resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  image = tf.image.pad_to_bounding_box(resized, 0, 0, out_height, out_width)

  objects = example['objects']
  bbox = tf.reshape(tf.cast(objects['bbox'], tf.float32), (-1, 4))
  crowd = tf.cast(objects['is_crowd'], tf.bool)
  if 'area' in objects:
    area = tf.cast(objects['area'], tf.float32)
  else:  # normalised box area: the same order as pixel area within one image
    area = (bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1])
  # Keep non-crowd before crowd, larger before smaller; then restore file order per group.
  by_area = tf.argsort(-area, stable=True)
  kept = _group_order(crowd, by_area)[:max_instances]
  kept = _group_order(crowd, tf.sort(kept))
  count = tf.shape(kept)[0]

  def pad(values: tf.Tensor) -> tf.Tensor:
    padding = [[0, max_instances - count]] + [[0, 0]] * (len(values.shape) - 1)
    return tf.pad(values, padding)

  ymin, xmin, ymax, xmax = tf.unstack(tf.gather(bbox, kept), axis=1)
  size_x, size_y = tf.cast(resized_width, tf.float32), tf.cast(resized_height, tf.float32)
  boxes = tf.stack([tf.clip_by_value(xmin * size_x, 0, size_x),
                    tf.clip_by_value(ymin * size_y, 0, size_y),
                    tf.clip_by_value(xmax * size_x, 0, size_x),
                    tf.clip_by_value(ymax * size_y, 0, size_y)], axis=1)
  classes = tf.cast(tf.gather(objects['label'], kept), tf.int32) + 1
  features = {
      'image': image,
      'boxes': pad(boxes),
      'classes': pad(classes),
      'instance_masks': tf.zeros((max_instances, out_height, out_width), tf.uint8),
      'is_crowd': pad(tf.gather(crowd, kept)),
      'instance_valid': pad(tf.ones_like(kept, tf.bool)),
      'image_id': tf.cast(example['image/id'], tf.int64),
      'image_scale': scale,
      'resized_size': tf.stack([resized_height, resized_width]),
      'original_size': tf.stack([height, width]),
  }
  signature = output_signature(image_size, max_instances)
  return {k: tf.ensure_shape(v, signature[k].shape) for k, v in features.items()}


@SOURCES.register('coco_tfds')
def coco_tfds_source(split: str, image_size: Sequence[int] = (512, 512),
                     max_instances: int = 100, tfds_name: str = 'coco/2017',
                     tfds_data_dir: str | None = None, **unused: Any) -> Source:
  """A prepared TFDS `coco/2017` split as data/coco.py features, WITHOUT masks."""
  tfds_split = 'validation' if split == 'val' else split
  builder = tfds.builder(tfds_name, data_dir=tfds_data_dir)
  try:
    records = builder.as_dataset(split=tfds_split, shuffle_files=False,
                                 decoders={'image': tfds.decode.SkipDecoding()})
  except AssertionError as e:  # TFDS's way of saying "not prepared"
    raise FileNotFoundError(
        f'coco_tfds: {tfds_name} split {tfds_split!r} is not prepared in '
        f'{builder.data_dir} (set config.data.tfds_data_dir, prepare it with TFDS, or use '
        f'the coco_json source on the COCO JSON files): {e}') from e
  num_examples = int(records.cardinality())
  if num_examples < 0 and tfds_split in builder.info.splits:
    num_examples = builder.info.splits[tfds_split].num_examples
  if num_examples < 0:
    raise ValueError(f'coco_tfds: the size of {tfds_name} split {tfds_split!r} is unknown.')
  records = records.map(lambda e: {k: e[k] for k in ('image', 'image/id', 'objects')})
  image_feature = builder.info.features['image']

  def decode(record):
    example = {**record, 'image': image_feature.decode_example(record['image'])}
    return convert_example(example, image_size, max_instances)

  names = builder.info.features['objects']['label'].names
  height, width = (int(d) for d in image_size)
  metadata = {'category_ids': COCO_CATEGORY_IDS[:len(names)], 'has_masks': False,
              'tfds_name': tfds_name, 'tfds_split': tfds_split}
  return Source(records, num_examples, ('background', *names), (height, width, 3), metadata,
                decode)
