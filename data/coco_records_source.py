"""The `coco_records` source: COCO converted by data/coco_records.py, decoded with TF ops.

Records are the serialized tf.train.Example of each image (original encoded bytes,
annotations, uncompressed-RLE masks), read from the split's shards with a deterministic
parallel interleave, in ascending image id order (the conversion puts image j in shard
j % num_shards). `decode` (TF ops only, so it runs in the pipeline's parallel map after
the shuffle, skip and per-host shard) returns exactly data/coco.py's features, with the
same conventions (see its docstring):
- the image is resized to fit `image_size` keeping its aspect ratio, bilinear
  (tf.image.resize with antialias, PIL's BILINEAR filter for up- and downscaling), and
  zero-padded at the bottom and right. PIL rounds to uint8 after each of its two passes,
  TF once: pixels may differ by a grey level or two (tests/data/test_coco_records.py
  measures the bound on coco128); everything else is identical;
- instances are chosen as data/coco.py select_instances does (the largest non-crowd
  ones first, then crowd regions; kept ones in file order, non-crowd before crowd),
  masks resized nearest-neighbour at pixel centres (data/coco.py nearest_indices),
  boxes scaled per axis and clipped.
Memory: a record holds the compressed image (COCO: ~160 KB), so a training shuffle
buffer of B records holds B times that, whatever the number of images.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from errors import UserError
from data import coco
from data.coco_records import FORMAT_VERSION, SIDECAR_FORMAT, sidecar_path
from data.sources import SOURCES, Source

FEATURES = {
    'image/encoded': tf.io.FixedLenFeature([], tf.string),
    'image/id': tf.io.FixedLenFeature([], tf.int64),
    'image/height': tf.io.FixedLenFeature([], tf.int64),
    'image/width': tf.io.FixedLenFeature([], tf.int64),
    'image/file_name': tf.io.FixedLenFeature([], tf.string),
    **{f'objects/{name}': tf.io.FixedLenSequenceFeature([], dtype, allow_missing=True)
       for name, dtype in (('bbox_xyxy', tf.float32), ('label', tf.int64),
                           ('is_crowd', tf.int64), ('area_rank', tf.int64),
                           ('mask_rle', tf.int64), ('mask_rle_length', tf.int64))}}


class CocoRecordsError(UserError, ValueError):
  """A converted folder is missing, of another format version, or damaged; names the file."""


def read_sidecar(data_dir: str, split: str) -> dict[str, Any]:
  """The checked sidecar of `split` in a folder written by data/coco_records.py."""
  path = sidecar_path(data_dir, split)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'coco_records: {path} does not exist; convert the split first: python -m '
        f'data.coco_records --data_dir=<COCO folder> --split={split} --out_dir={data_dir}')
  with open(path) as f:
    try:
      sidecar = json.load(f)
    except json.JSONDecodeError as e:
      raise CocoRecordsError(f'{path}: not valid JSON ({e}).') from e
  if sidecar.get('format') != SIDECAR_FORMAT or sidecar.get('format_version') != FORMAT_VERSION:
    raise CocoRecordsError(
        f'{path}: field "format_version" is {sidecar.get("format_version")!r} (format '
        f'{sidecar.get("format")!r}); this code reads {SIDECAR_FORMAT!r} version '
        f'{FORMAT_VERSION}: convert the split again with python -m data.coco_records.')
  for shard in sidecar['shards']:
    shard_path = os.path.join(data_dir, shard['file'])
    if not os.path.isfile(shard_path):
      raise FileNotFoundError(f'coco_records: {path} lists shard {shard_path}, which does '
                              'not exist.')
    if os.path.getsize(shard_path) != shard['bytes']:
      raise CocoRecordsError(
          f'{shard_path}: the shard has {os.path.getsize(shard_path)} bytes, but {path} says '
          f'{shard["bytes"]}: a partial copy or another conversion; copy or convert it again.')
  return sidecar


def verify(data_dir: str, split: str) -> int:
  """Reads every record of the split back, shard by shard; returns the number read.

  Raises CocoRecordsError naming the shard when a record fails its checksum or a shard
  holds another number of records than the sidecar says.
  """
  sidecar = read_sidecar(data_dir, split)
  total = 0
  for shard in sidecar['shards']:
    shard_path = os.path.join(data_dir, shard['file'])
    count = 0
    try:
      for _ in tf.data.TFRecordDataset(shard_path):
        count += 1
    except tf.errors.DataLossError as e:
      raise CocoRecordsError(f'{shard_path}: record {count} is damaged ({e.message}); copy or '
                             'convert the split again.') from e
    if count != shard['num_examples']:
      raise CocoRecordsError(f'{shard_path}: {count} records, but the sidecar says '
                             f'{shard["num_examples"]}.')
    total += count
  return total


def _nearest(source: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
  """data/coco.py nearest_indices in TF (float64, so the same indices)."""
  centres = (tf.cast(tf.range(target), tf.float64) + 0.5) * (
      tf.cast(source, tf.float64) / tf.cast(target, tf.float64))
  return tf.minimum(tf.cast(centres, tf.int32), source - 1)


def _resized_extent(size: tf.Tensor, scale: tf.Tensor, limit: int) -> tf.Tensor:
  """data/coco.py resized_extent in TF."""
  extent = tf.cast(tf.floor(tf.cast(size, tf.float64) * scale + 0.5), tf.int32)
  return tf.clip_by_value(extent, 1, limit)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
  """uint8 [h, w, 3]; JPEG with the accurate integer DCT that PIL (libjpeg) uses."""
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))


def sample_masks(rles: tf.RaggedTensor, height: tf.Tensor, width: tf.Tensor, rows: tf.Tensor,
                 cols: tf.Tensor) -> tf.Tensor:
  """uint8 [k, len(rows), len(cols)]: k instances' 0/1 masks, given as uncompressed RLE
  [k, (runs)] of an image of `height` x `width` pixels, read at pixels (rows[i], cols[j]).

  Only the sampled pixels are decoded, never a full-size mask (100 instances on a
  640 x 480 image would be 30 M values a record): a pixel's run is found by a binary
  search in the run ends, and odd runs are ones. A sampled column whose top and bottom
  pixels lie in the same run is filled from that run without searching its rows
  (on coco128 at 256 px: 3.6 instead of 8.3 ms a record).
  """
  h = tf.cast(height, tf.int64)
  count = rles.nrows(out_type=tf.int64)
  # Each instance's runs sum to h * w, so the run ends of all instances, one after the
  # other, form one sorted sequence; a run's index in its own instance is its index
  # there minus the instance's first run.
  ends = tf.reshape(tf.cumsum(rles.flat_values), (1, -1))
  first = tf.cast(rles.row_starts(), tf.int64)

  def run_of(positions: tf.Tensor, instance: tf.Tensor) -> tf.Tensor:
    index = tf.searchsorted(ends, tf.reshape(positions, (1, -1)), side='right')
    return tf.reshape(tf.cast(index, tf.int64), tf.shape(positions)) - tf.gather(first, instance)

  # Column-major positions (COCO's RLE order) of each sampled column's top pixel [k, c].
  top = (tf.range(count)[:, None] * h * tf.cast(width, tf.int64)
         + tf.cast(cols, tf.int64)[None, :] * h)
  instance = tf.broadcast_to(tf.range(count)[:, None], tf.shape(top))
  top_run, bottom_run = run_of(top, instance), run_of(top + h - 1, instance)
  masks = tf.tile(tf.cast(tf.math.floormod(top_run, 2), tf.uint8)[:, :, None],
                  tf.stack([1, 1, tf.size(rows)]))  # [k, c, r]
  mixed = tf.where(top_run != bottom_run)  # (instance, column) pairs that change inside
  positions = tf.gather_nd(top, mixed)[:, None] + tf.cast(rows, tf.int64)[None, :]
  runs = run_of(positions, tf.broadcast_to(mixed[:, :1], tf.shape(positions)))
  masks = tf.tensor_scatter_nd_update(masks, mixed, tf.cast(tf.math.floormod(runs, 2),
                                                            tf.uint8))
  return tf.transpose(masks, (0, 2, 1))


def kept_instances(is_crowd: tf.Tensor, area_rank: tf.Tensor, max_instances: int) -> tf.Tensor:
  """int32 [k]: data/coco.py select_instances on records stored non-crowd first, with
  each annotation's area rank in its group: indices in stored order."""
  crowd = tf.cast(is_crowd, tf.bool)
  things = tf.minimum(tf.reduce_sum(tf.cast(~crowd, tf.int64)), max_instances)
  keep = tf.where(crowd, area_rank < max_instances - things, area_rank < max_instances)
  return tf.cast(tf.where(keep)[:, 0], tf.int32)


def decode_record(record: tf.Tensor, image_size: Sequence[int], max_instances: int
                  ) -> dict[str, tf.Tensor]:
  """A serialized record -> data/coco.py's feature dict (module docstring)."""
  out_height, out_width = (int(d) for d in image_size)
  n = int(max_instances)
  f = tf.io.parse_single_example(record, FEATURES)
  height = tf.cast(f['image/height'], tf.int32)
  width = tf.cast(f['image/width'], tf.int32)
  pixels = decode_image(f['image/encoded'])
  same_size = tf.reduce_all(tf.equal(tf.shape(pixels)[:2], tf.stack([height, width])))
  with tf.control_dependencies([tf.debugging.Assert(same_size, [
      'coco_records: image file_name, id, decoded (h, w, c), recorded (h, w):',
      f['image/file_name'], f['image/id'], tf.shape(pixels), height, width])]):
    pixels = tf.identity(pixels)
  scale = tf.minimum(out_height / tf.cast(height, tf.float64),
                     out_width / tf.cast(width, tf.float64))
  resized_height = _resized_extent(height, scale, out_height)
  resized_width = _resized_extent(width, scale, out_width)
  resized = tf.image.resize(pixels, tf.stack([resized_height, resized_width]),
                            method='bilinear', antialias=True)
  resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  image = tf.image.pad_to_bounding_box(resized, 0, 0, out_height, out_width)

  kept = kept_instances(f['objects/is_crowd'], f['objects/area_rank'], n)
  count = tf.shape(kept)[0]
  rles = tf.gather(tf.RaggedTensor.from_row_lengths(f['objects/mask_rle'],
                                                    f['objects/mask_rle_length']), kept)
  masks = sample_masks(rles, height, width, _nearest(height, resized_height),
                       _nearest(width, resized_width))
  masks = tf.pad(masks, [[0, n - count], [0, out_height - resized_height],
                         [0, out_width - resized_width]])
  factors = tf.cast(tf.stack([resized_width / width, resized_height / height] * 2), tf.float32)
  limits = tf.cast(tf.stack([resized_width, resized_height] * 2), tf.float32)
  boxes = tf.gather(tf.reshape(f['objects/bbox_xyxy'], (-1, 4)), kept)
  boxes = tf.clip_by_value(boxes * factors, 0.0, limits)

  def pad(values: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    return tf.pad(tf.cast(values, dtype), [[0, n - count]])

  return {
      'image': tf.ensure_shape(image, (out_height, out_width, 3)),
      'boxes': tf.ensure_shape(tf.pad(boxes, [[0, n - count], [0, 0]]), (n, 4)),
      'classes': tf.ensure_shape(pad(tf.gather(f['objects/label'], kept), tf.int32), (n,)),
      'instance_masks': tf.ensure_shape(masks, (n, out_height, out_width)),
      'is_crowd': tf.ensure_shape(pad(tf.gather(f['objects/is_crowd'], kept), tf.bool), (n,)),
      'instance_valid': tf.ensure_shape(pad(tf.ones_like(kept), tf.bool), (n,)),
      'image_id': f['image/id'], 'image_scale': tf.cast(scale, tf.float32),
      'resized_size': tf.stack([resized_height, resized_width]),
      'original_size': tf.stack([height, width])}


def _warn_truncated(path: str, sidecar: Mapping[str, Any], max_instances: int) -> None:
  over = sum(v for k, v in sidecar['annotations_per_image'].items() if int(k) > max_instances)
  coco.warn_truncated(path, over, [
      (m['id'], m['file_name'], m['annotations'], m['non_crowd'])
      for m in sidecar['most_annotated'] if m['annotations'] > max_instances], max_instances)


@SOURCES.register('coco_records')
def coco_records_source(split: str, data_dir: str, image_size: Sequence[int] = (512, 512),
                        max_instances: int = 100, **unused: Any) -> Source:
  """The records of `split` converted into `data_dir` by data/coco_records.py, decoded
  to data/coco.py's features (module docstring). `split` is the name given at conversion."""
  sidecar = read_sidecar(data_dir, split)
  _warn_truncated(sidecar_path(data_dir, split), sidecar, max_instances)
  files = [os.path.join(data_dir, shard['file']) for shard in sidecar['shards']]
  records = tf.data.Dataset.from_tensor_slices(files).interleave(
      tf.data.TFRecordDataset, cycle_length=len(files), block_length=1,
      num_parallel_calls=min(len(files), 16), deterministic=True)
  records = records.apply(tf.data.experimental.assert_cardinality(sidecar['num_examples']))
  gt_file = os.path.join(data_dir, sidecar['annotation_file'])  # absolute stays absolute
  height, width = (int(d) for d in image_size)
  metadata = {'category_ids': tuple(sidecar['category_ids']), 'annotation_file': gt_file,
              'image_dir': sidecar['converted_from']['image_dir'], 'has_masks': True,
              'records_dir': data_dir}
  return Source(records, sidecar['num_examples'], tuple(sidecar['class_names']),
                (height, width, 3), metadata,
                decode=lambda record: decode_record(record, image_size, max_instances))
