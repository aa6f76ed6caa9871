"""Paired image / mask folders for segmentation, e.g. CamVid and the ISBI membranes.

An image and its mask are matched by file name (the mask may have another
extension, e.g. `x.jpg` with `x.png`). Masks hold class ids 0..C-1 in one channel,
optionally through a `value_map` (e.g. ISBI's 0/255 -> 0/1), plus an `ignore_id`
for unlabelled pixels. All pairs are decoded and checked once, eagerly, so a bad file
is named: an image without a mask, an image and mask of different sizes, images of
different sizes (batches need one static shape), or a mask value outside the
declared classes. Examples: `{'image': uint8 [H, W, C], 'mask': int32 [H, W]}`,
sorted by file name (numerically where the names are numbers).

Sources:
  seg_folder      any layout: `image_dir` / `mask_dir` templates with `{split}`.
  camvid          `data_dir/{split}/` with `data_dir/{split}annot/`; 11 classes, 11 = void.
  isbi_membrane   `data_dir/train/image/N.png` with `.../label/N.png` (0/255); the first
                  `train_slices` (sorted by N) are 'train', the rest 'val'.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from data.sources import SOURCES, Source

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
CAMVID_CLASSES = ('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol',
                  'Fence', 'Car', 'Pedestrian', 'Bicyclist')
CAMVID_IGNORE = 11
ISBI_CLASSES = ('membrane', 'cell')  # label value 0 -> 0 (membrane), 255 -> 1 (cell)


class SegFolderError(ValueError):
  """A segmentation folder is not as expected; the message names the file."""


def _sort_key(name: str):
  stem = os.path.splitext(name)[0]
  return (0, int(stem), '') if stem.isdigit() else (1, 0, stem)


def list_pairs(image_dir: str, mask_dir: str) -> list[tuple[str, str]]:
  """(image path, mask path) pairs matched by file stem, sorted; raises on a missing mask."""
  for d, what in ((image_dir, 'image'), (mask_dir, 'mask')):
    if not os.path.isdir(d):
      raise FileNotFoundError(f'segmentation {what} folder {d!r} does not exist (set '
                              'config.data.data_dir to the folder holding it).')
  masks = {os.path.splitext(f)[0]: f for f in os.listdir(mask_dir)
           if f.lower().endswith(IMAGE_EXTENSIONS)}
  images = sorted((f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS)),
                  key=_sort_key)
  if not images:
    raise SegFolderError(f'{image_dir}: no {"/".join(IMAGE_EXTENSIONS)} images found.')
  pairs = []
  for name in images:
    stem = os.path.splitext(name)[0]
    if stem not in masks:
      raise SegFolderError(f'{os.path.join(image_dir, name)} has no mask: expected '
                           f'{os.path.join(mask_dir, stem)}.<png|...> (masks are matched '
                           'to images by file name).')
    pairs.append((os.path.join(image_dir, name), os.path.join(mask_dir, masks[stem])))
  return pairs


def _decode(path: str, channels: int) -> np.ndarray:
  try:
    return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                              expand_animations=False).numpy()
  except tf.errors.OpError as e:
    raise SegFolderError(f'{path}: cannot decode the image ({e.message}).') from e


def map_mask(raw: np.ndarray, path: str, num_classes: int, ignore_id: Optional[int],
             value_map: Optional[Mapping[int, int]] = None) -> np.ndarray:
  """Raw mask values -> int32 class ids, checking that each is a class or `ignore_id`."""
  mask = raw.astype(np.int32)
  if value_map:
    table = np.full(max(256, int(mask.max()) + 1), -1, np.int32)
    for raw_value, class_id in value_map.items():
      table[int(raw_value)] = int(class_id)
    mapped = table[mask]
    unmapped = mapped < 0
    if unmapped.any():
      raise SegFolderError(
          f'{path}: mask value {int(mask[unmapped][0])} is not in value_map '
          f'{dict(value_map)} ({int(unmapped.sum())} pixels).')
    mask = mapped
  allowed = (mask >= 0) & (mask < num_classes)
  if ignore_id is not None:
    allowed |= mask == ignore_id
  if not allowed.all():
    bad = np.unique(mask[~allowed])
    raise SegFolderError(
        f'{path}: mask values {bad.tolist()} outside the declared classes 0..{num_classes - 1}'
        + (f' and ignore id {ignore_id}' if ignore_id is not None else '')
        + f' ({int((~allowed).sum())} pixels).')
  return mask


def load_pairs(pairs: Sequence[tuple[str, str]], channels: int, num_classes: int,
               ignore_id: Optional[int], value_map: Optional[Mapping[int, int]] = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, H, W, channels], masks int32 [N, H, W]), every pair checked."""
  images, masks = [], []
  for image_path, mask_path in pairs:
    image = _decode(image_path, channels)
    raw = _decode(mask_path, 1)[..., 0]
    if image.shape[:2] != raw.shape:
      raise SegFolderError(f'{mask_path}: mask size {raw.shape} (H, W) differs from its image '
                           f'{image_path} {image.shape[:2]}.')
    if images and image.shape != images[0].shape:
      raise SegFolderError(f'{image_path}: shape {image.shape}, but {pairs[0][0]} has '
                           f'{images[0].shape}; every image must have one size (resize '
                           'the folder first).')
    images.append(image)
    masks.append(map_mask(raw, mask_path, num_classes, ignore_id, value_map))
  return np.stack(images), np.stack(masks)


def _source(pairs, class_names, channels, ignore_id, value_map=None) -> Source:
  images, masks = load_pairs(pairs, channels, len(class_names), ignore_id, value_map)
  dataset = tf.data.Dataset.from_tensor_slices({'image': images, 'mask': masks})
  return Source(dataset, len(images), tuple(class_names), tuple(images.shape[1:]))


@SOURCES.register('seg_folder')
def seg_folder_source(split: str, data_dir: str, class_names: Sequence[str],
                      image_dir: str = '{split}', mask_dir: str = '{split}annot',
                      channels: int = 3, ignore_id: Optional[int] = 255,
                      value_map: Optional[Mapping[int, int]] = None, **unused: Any) -> Source:
  """`data_dir/<image_dir>` paired with `data_dir/<mask_dir>` (`{split}` substituted)."""
  pairs = list_pairs(os.path.join(data_dir, image_dir.format(split=split)),
                     os.path.join(data_dir, mask_dir.format(split=split)))
  return _source(pairs, class_names, channels, ignore_id, value_map)


@SOURCES.register('camvid')
def camvid_source(split: str, data_dir: str = '../shared/data/camvid_240x180',
                  **unused: Any) -> Source:
  """CamVid (SegNet layout): 'train' 367, 'val' 101, 'test' 233 images; void = 11."""
  if split not in ('train', 'val', 'test'):
    raise ValueError(f"camvid: split {split!r}; expected 'train', 'val' or 'test'.")
  return seg_folder_source(split, data_dir, CAMVID_CLASSES, ignore_id=CAMVID_IGNORE)


@SOURCES.register('isbi_membrane')
def isbi_source(split: str, data_dir: str = '../shared/data/isbi_membrane',
                train_slices: int = 24, **unused: Any) -> Source:
  """ISBI 2012 EM slices, grey [512, 512, 1]; mask 1 = cell (label 255), 0 = membrane.

  'train' is the first `train_slices` slices by number, 'val' (or 'test') the rest:
  a contiguous block of the stack, so neighbouring slices do not leak across.
  """
  pairs = list_pairs(os.path.join(data_dir, 'train', 'image'),
                     os.path.join(data_dir, 'train', 'label'))
  if not 0 < train_slices < len(pairs):
    raise ValueError(f'isbi_membrane: config.data.train_slices={train_slices}; expected '
                     f'1..{len(pairs) - 1} of the {len(pairs)} slices in {data_dir}.')
  if split not in ('train', 'val', 'test'):
    raise ValueError(f"isbi_membrane: split {split!r}; expected 'train' or 'val'.")
  chosen = pairs[:train_slices] if split == 'train' else pairs[train_slices:]
  return _source(chosen, ISBI_CLASSES, 1, None, {0: 0, 255: 1})
