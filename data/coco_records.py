"""COCO at full size: a COCO-layout folder converted once into sharded TFRecord files.

The `coco_json` source (data/coco.py) reads the instances JSON into memory and decodes
from image files. For full COCO (118k train images, 860k annotations) and for many
hosts, convert each split once:

  python -m data.coco_records --data_dir=/data/coco --split=train \\
      --out_dir=/data/coco_records [--num_shards=128] [--annotation_file=...] \\
      [--image_dir=...] [--copy_annotations]

It reads the folder exactly as `coco_json` does (data/coco.py `resolve_paths` and
`load_annotations`: the same layout, `train` -> `train2017` fallbacks and errors naming
the file and field; data/coco_images.py checks every image file) and writes

  <out_dir>/<split>-00000-of-00128.tfrecord ...   tf.train.Example records
  <out_dir>/<split>.json                         the sidecar (SIDECAR_FORMAT below)

each file written to a temporary name and renamed when complete. Image j of the split
in ascending image id order goes to shard j % num_shards, so a deterministic interleave
reading the shards round robin gives ascending image ids again (the source's order),
while reading num_shards files in parallel. One record per image:

  image/encoded       the ORIGINAL file bytes (JPEG or 8-bit PNG); other formats and
                      modes (CMYK JPEG, 16-bit PNG, ...) are re-encoded as a lossless
                      PNG of what data/coco_images.py load_image decodes
  image/id, image/height, image/width, image/file_name
  objects/...         one entry per annotation, the non-crowd ones first, then the crowd
                      ones, each group in file order (data/coco.py select_instances'
                      order): bbox_xyxy (float32, original pixels, x0 y0 x1 y1 as
                      data/coco.py computes them), category_id, label (1..K in ascending
                      category id order), is_crowd, area (data/coco.py's), area_rank (0
                      = largest of its group, ties in file order: select_instances' rule
                      for any max_instances), annotation_id, and the instance mask as COCO
                      uncompressed RLE at the original size (mask_rle: the run lengths of
                      all instances concatenated, column-major, starting with a run of
                      zeros; mask_rle_length: runs per instance). Polygons and compressed
                      RLE are decoded once here with pycocotools; decoding the runs needs
                      only tf.repeat.

The `coco_records` source (data/coco_records_source.py) reads them back with TF ops only.
A shard's size is checked when the source is built (a partial copy is named); a record
damaged in the middle surfaces in training as TensorFlow's `DataLossError: corrupted
record at <offset>`, which names no file: `python -m data.coco_records --verify
--out_dir=... --split=...` reads every record back and names the shard.
COCOeval scores against the original annotation JSON: the sidecar records its absolute
path, or with --copy_annotations a copy inside out_dir (so the folder alone suffices on
another host).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from data import coco
from data.coco_images import check_image_file, load_image

SIDECAR_FORMAT = 'redconv.coco_records'
FORMAT_VERSION = 1
# Formats and PIL modes whose bytes TF's decode_image turns into the same RGB pixels as
# data/coco_images.py load_image (alpha dropped, gray and palette expanded).
KEPT_MODES = {'JPEG': ('RGB', 'L'), 'PNG': ('RGB', 'RGBA', 'L', 'LA', 'P')}
MOST_ANNOTATED = 5  # images listed in the sidecar for the too-many-instances warning


def shard_name(split: str, index: int, num_shards: int) -> str:
  return f'{split}-{index:05d}-of-{num_shards:05d}.tfrecord'


def sidecar_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f'{split}.json')


def uncompressed_rle(mask: np.ndarray) -> np.ndarray:
  """int64 [runs]: COCO uncompressed RLE of a 0/1 mask [h, w] (column-major, zeros first)."""
  flat = mask.ravel(order='F')
  bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
  runs = np.diff(bounds)
  return np.concatenate([[0], runs]) if flat.size and flat[0] else runs


def area_ranks(areas: Sequence[float]) -> list[int]:
  """Rank of each area, 0 = largest, ties in the given order (select_instances' rule)."""
  order = sorted(range(len(areas)), key=lambda i: -areas[i])
  ranks = [0] * len(areas)
  for rank, i in enumerate(order):
    ranks[i] = rank
  return ranks


def image_bytes(path: str, image_id: int) -> tuple[bytes, bool]:
  """(bytes to store, whether they were re-encoded) of one checked image file."""
  with open(path, 'rb') as f:
    data = f.read()
  with Image.open(io.BytesIO(data)) as image:
    kept = image.mode in KEPT_MODES.get(image.format, ())
    if image.format == 'PNG' and image.info.get('transparency') is not None:
      kept = kept and image.mode in ('P', 'RGBA')  # tRNS on RGB/L: TF would add alpha
  if kept:
    return data, False
  buffer = io.BytesIO()
  Image.fromarray(load_image(path, image_id)).save(buffer, format='PNG')
  return buffer.getvalue(), True


def _ints(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _bytes(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def make_example(image_info: Mapping[str, Any], annotations: Sequence[dict], encoded: bytes,
                 label_of: Mapping[int, int]) -> tf.train.Example:
  """The record of one checked image entry and its checked annotations (module docstring)."""
  height, width = int(image_info['height']), int(image_info['width'])
  things = [a for a in annotations if not a.get('iscrowd', 0)]
  crowds = [a for a in annotations if a.get('iscrowd', 0)]
  ordered = things + crowds
  areas = [coco._area(a) for a in ordered]  # pylint: disable=protected-access
  ranks = area_ranks(areas[:len(things)]) + area_ranks(areas[len(things):])
  boxes, runs, run_lengths = [], [], []
  for annotation in ordered:
    x, y, w, h = (float(v) for v in annotation['bbox'])
    boxes.extend(np.array([x, y, x + w, y + h], np.float32).tolist())
    rle = uncompressed_rle(coco.decode_mask(annotation['segmentation'], height, width))
    runs.extend(rle.tolist())
    run_lengths.append(len(rle))
  feature = {
      'image/encoded': _bytes(encoded), 'image/id': _ints([image_info['id']]),
      'image/height': _ints([height]), 'image/width': _ints([width]),
      'image/file_name': _bytes(str(image_info['file_name']).encode('utf-8')),
      'objects/bbox_xyxy': _floats(boxes),
      'objects/category_id': _ints([a['category_id'] for a in ordered]),
      'objects/label': _ints([label_of[a['category_id']] for a in ordered]),
      'objects/is_crowd': _ints([0] * len(things) + [1] * len(crowds)),
      'objects/area': _floats(areas), 'objects/area_rank': _ints(ranks),
      'objects/annotation_id': _ints([a.get('id', -1) for a in ordered]),
      'objects/mask_rle': _ints(runs), 'objects/mask_rle_length': _ints(run_lengths)}
  return tf.train.Example(features=tf.train.Features(feature=feature))


def convert(data_dir: str, split: str, out_dir: str, num_shards: int = 0,
            annotation_file: str = '', image_dir: str = '', copy_annotations: bool = False
            ) -> dict[str, Any]:
  """Writes the split's shards and sidecar under `out_dir`; returns the sidecar dict.

  num_shards: 0 picks about 1,000 images a shard (full COCO train: 119 shards of ~160 MB).
  """
  json_path, images_path = coco.resolve_paths(split, data_dir, annotation_file, image_dir)
  images, per_image, categories = coco.load_annotations(json_path, images_path)
  num_shards = int(num_shards) or max(1, -(-len(images) // 1000))
  if num_shards < 1:
    raise ValueError(f'data/coco_records.py: --num_shards={num_shards}; expected >= 1.')
  label_of = {c['id']: k + 1 for k, c in enumerate(categories)}
  os.makedirs(out_dir, exist_ok=True)
  names = [shard_name(split, i, num_shards) for i in range(num_shards)]
  temps = [os.path.join(out_dir, f'.{name}.tmp') for name in names]
  writers = [tf.io.TFRecordWriter(path) for path in temps]
  counts = [0] * num_shards
  histogram: collections.Counter = collections.Counter()
  most: list[dict] = []
  reencoded = 0
  complete = False
  try:
    for j, image_info in enumerate(images):
      path = os.path.join(images_path, image_info['file_name'])
      check_image_file(path, image_info, json_path)
      encoded, changed = image_bytes(path, image_info['id'])
      reencoded += changed
      annotations = per_image[image_info['id']]
      writers[j % num_shards].write(
          make_example(image_info, annotations, encoded, label_of).SerializeToString())
      counts[j % num_shards] += 1
      histogram[len(annotations)] += 1
      most.append({'id': image_info['id'], 'file_name': image_info['file_name'],
                   'annotations': len(annotations),
                   'non_crowd': sum(not a.get('iscrowd', 0) for a in annotations)})
      most = sorted(most, key=lambda m: -m['annotations'])[:MOST_ANNOTATED]
    complete = True
  finally:
    for writer in writers:
      writer.close()
    if not complete:  # no partial shard is left behind under any name
      for temp in temps:
        os.remove(temp)
  for temp, name in zip(temps, names):
    os.replace(temp, os.path.join(out_dir, name))
  gt_file = os.path.abspath(json_path)
  if copy_annotations:
    gt_file = f'{split}_instances.json'
    shutil.copyfile(json_path, os.path.join(out_dir, f'.{gt_file}.tmp'))
    os.replace(os.path.join(out_dir, f'.{gt_file}.tmp'), os.path.join(out_dir, gt_file))
  sidecar = {
      'format': SIDECAR_FORMAT, 'format_version': FORMAT_VERSION, 'split': split,
      'converted_from': {'annotation_file': os.path.abspath(json_path),
                         'image_dir': os.path.abspath(images_path)},
      'annotation_file': gt_file, 'categories': categories,
      'class_names': ['background', *(c['name'] for c in categories)],
      'category_ids': [c['id'] for c in categories], 'num_examples': len(images),
      'num_annotations': sum(histogram[k] * k for k in histogram),
      'annotations_per_image': {str(k): histogram[k] for k in sorted(histogram)},
      'most_annotated': most, 'reencoded_images': reencoded,
      'shards': [{'file': n, 'num_examples': c,
                  'bytes': os.path.getsize(os.path.join(out_dir, n))}
                 for n, c in zip(names, counts)]}
  temp = os.path.join(out_dir, f'.{split}.json.tmp')
  with open(temp, 'w') as f:
    json.dump(sidecar, f, indent=1)
  os.replace(temp, sidecar_path(out_dir, split))
  return sidecar


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m data.coco_records', description=__doc__.split('\n\n')[0])
  parser.add_argument('--data_dir', default='',
                      help='the COCO-layout folder (annotations/ and images/)')
  parser.add_argument('--split', required=True, help="e.g. 'train' (finds train2017)")
  parser.add_argument('--out_dir', required=True)
  parser.add_argument('--num_shards', type=int, default=0,
                      help='0: about 1,000 images a shard')
  parser.add_argument('--annotation_file', default='')
  parser.add_argument('--image_dir', default='')
  parser.add_argument('--copy_annotations', action='store_true',
                      help='copy the annotation JSON (COCOeval ground truth) into out_dir')
  parser.add_argument('--verify', action='store_true',
                      help='only read every record of out_dir\'s split back (checksums)')
  args = parser.parse_args(argv)
  if args.verify:
    from data.coco_records_source import verify  # pylint: disable=g-import-not-at-top
    print(f'{sidecar_path(args.out_dir, args.split)}: '
          f'{verify(args.out_dir, args.split)} records read back, every checksum correct.')
    return
  if not args.data_dir:
    parser.error('--data_dir is required to convert.')
  sidecar = convert(args.data_dir, args.split, args.out_dir, args.num_shards,
                    args.annotation_file, args.image_dir, args.copy_annotations)
  print(f'{sidecar_path(args.out_dir, args.split)}: {sidecar["num_examples"]} images, '
        f'{sidecar["num_annotations"]} annotations in {len(sidecar["shards"])} shards '
        f'({sidecar["reencoded_images"]} images re-encoded as PNG).')


if __name__ == '__main__':
  main()
