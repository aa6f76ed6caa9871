"""Instance segmentation from instance-id label images: a folder of images, a folder of
label PNGs, and a split list.

Layout (e.g. ../shared/data/nuclei_dsb2018):
  <data_dir>/<split>.txt        one image id per line (the split's examples, in order)
  <data_dir>/images/<id>.png    the image (any PIL-readable mode; converted to RGB)
  <data_dir>/labels/<id>.png    16-bit (or 32-bit integer) single-channel label image of
                                the same size: 0 = background, each other value one
                                instance (ids need not be contiguous)
Every instance has the one class `class_name` (label 1, COCO category id 1).

The label images are read once, eagerly, when the source is built: every file is
checked (missing label, size mismatch with its image, wrong label dtype are named with
the file) and every instance becomes a COCO annotation (compressed-RLE mask, bbox,
area). Those annotations are the in-memory COCO ground truth for COCOeval
(`Source.metadata['ground_truth']`, a pycocotools COCO) and, through data/coco.py's
`load_example`, produce exactly the COCO source's feature dict and resize/pad (decoded
lazily, after the training pipeline's shuffle, shard and skip, as data/coco.py does): boxes,
classes, instance_masks, is_crowd (all False), instance_valid, image_id, image_scale,
resized_size, original_size (see data/coco.py). Image ids are 1..n in the split list's order;
`metadata['image_names'][image_id - 1]` is the file id.

More instances on an image than `max_instances` (the static cap): the largest are kept
(data/coco.py select_instances); the number dropped is counted per split in
`metadata['dropped_instances']` and warned about. The ground truth keeps them all.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from errors import UserError
from data import coco
from data.sources import SOURCES, Source

# PIL modes of integer single-channel images wide enough for instance ids.
_LABEL_MODES = ('I;16', 'I;16B', 'I;16L', 'I')


class LabelFormatError(UserError, ValueError):
  """A split list, image or label image does not fit the layout; the message names the file."""


def read_split(data_dir: str, split: str) -> list[str]:
  """The image ids listed in `<data_dir>/<split>.txt` (blank lines skipped)."""
  path = os.path.join(data_dir, f'{split}.txt')
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'instance_labels: split list {path} does not exist (set config.data.data_dir to '
        f'the folder holding <split>.txt, images/ and labels/).')
  with open(path) as f:
    names = [line.strip() for line in f if line.strip()]
  if not names:
    raise LabelFormatError(f'{path}: the split list is empty; expected one image id a line.')
  if len(set(names)) != len(names):
    raise LabelFormatError(f'{path}: the split list repeats an image id.')
  return names


def read_label(path: str) -> np.ndarray:
  """int64 [h, w] instance ids of a label image; raises naming the file when it is not one."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'instance_labels: label file {path} does not exist.')
  with Image.open(path) as image:
    if image.mode not in _LABEL_MODES:
      raise LabelFormatError(
          f'{path}: label image has PIL mode {image.mode!r} '
          f'({len(image.getbands())} channel(s)); expected a single-channel 16-bit (or '
          f'32-bit integer) instance-id image, modes {_LABEL_MODES}. An 8-bit or colour '
          'label is not an instance-id map.')
    label = np.asarray(image).astype(np.int64)
  if label.min() < 0:
    raise LabelFormatError(f'{path}: label image has negative ids; expected 0 = background '
                           'and positive instance ids.')
  return label


def label_annotations(label: np.ndarray, image_id: int, first_id: int) -> list[dict]:
  """COCO annotations (category 1, compressed RLE, bbox, area) of each id > 0 of `label`.

  label: int [h, w]. Annotation ids are `first_id, first_id + 1, ...` in ascending
  instance id order.
  """
  ids = np.unique(label)
  ids = ids[ids > 0]
  if not ids.size:
    return []
  binary = np.asfortranarray((label[:, :, None] == ids[None, None, :]).astype(np.uint8))
  rles = mask_utils.encode(binary)
  areas = mask_utils.area(rles)
  boxes = mask_utils.toBbox(rles)
  return [{'id': first_id + k, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
           'segmentation': {'size': [int(s) for s in rle['size']],
                            'counts': rle['counts'].decode('ascii')},
           'area': float(areas[k]), 'bbox': [float(v) for v in boxes[k]]}
          for k, rle in enumerate(rles)]


def load_split(data_dir: str, split: str, image_dir: str = 'images', label_dir: str = 'labels'
               ) -> tuple[list[dict], dict[int, list[dict]]]:
  """(COCO image entries, annotations per image id) of a split, every file checked."""
  names = read_split(data_dir, split)
  images, per_image = [], {}
  next_id = 1
  for image_id, name in enumerate(names, start=1):
    image_path = os.path.join(data_dir, image_dir, f'{name}.png')
    label_path = os.path.join(data_dir, label_dir, f'{name}.png')
    if not os.path.isfile(image_path):
      raise FileNotFoundError(f'instance_labels: image file {image_path} (listed in '
                              f'{split}.txt) does not exist.')
    with Image.open(image_path) as image:
      width, height = image.size
    label = read_label(label_path)
    if label.shape != (height, width):
      raise LabelFormatError(
          f'{label_path}: label image has (h, w) = {label.shape}, but its image '
          f'{image_path} has (h, w) = ({height}, {width}); expected the same size.')
    annotations = label_annotations(label, image_id, next_id)
    next_id += len(annotations)
    images.append({'id': image_id, 'file_name': f'{name}.png', 'height': height,
                   'width': width})
    per_image[image_id] = annotations
  return images, per_image


def ground_truth(images: Sequence[dict], per_image: dict[int, list[dict]],
                 class_name: str) -> COCO:
  """The split as an in-memory pycocotools COCO (what COCOeval scores against)."""
  gt = COCO()
  gt.dataset = {'images': list(images),
                'annotations': [a for image in images for a in per_image[image['id']]],
                'categories': [{'id': 1, 'name': class_name}]}
  with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
  return gt


@SOURCES.register('instance_labels')
def instance_labels_source(split: str, data_dir: str, image_size: Sequence[int] = (256, 256),
                           max_instances: int = 400, class_name: str = 'nucleus',
                           image_dir: str = 'images', label_dir: str = 'labels',
                           **unused: Any) -> Source:
  """Images + instance-id label PNGs of `<data_dir>/<split>.txt` (module docstring)."""
  images, per_image = load_split(data_dir, split, image_dir, label_dir)
  counts = [len(per_image[image['id']]) for image in images]
  dropped = sum(max(0, n - max_instances) for n in counts)
  if dropped:
    over = sum(n > max_instances for n in counts)
    warnings.warn(f'instance_labels: {data_dir} split {split!r}: {over} image(s) have more '
                  f'than max_instances={max_instances} instances (at most {max(counts)}); '
                  f'{dropped} of {sum(counts)} instances dropped from the training targets '
                  '(the smallest ones; the ground truth keeps them). Raise '
                  'config.data.max_instances to keep them.', stacklevel=2)
  images_path = os.path.join(data_dir, image_dir)
  label_of = {1: 1}

  records, decode = coco.indexed_examples(images, per_image, images_path, label_of,
                                          image_size, max_instances)
  height, width = (int(d) for d in image_size)
  metadata = {'category_ids': (1,), 'ground_truth': ground_truth(images, per_image, class_name),
              'image_dir': images_path, 'label_dir': os.path.join(data_dir, label_dir),
              'image_names': tuple(os.path.splitext(i['file_name'])[0] for i in images),
              'num_instances': sum(counts), 'max_instances_per_image': max(counts),
              'dropped_instances': dropped, 'has_masks': True}
  return Source(records, len(images), ('background', class_name), (height, width, 3), metadata,
                decode)
