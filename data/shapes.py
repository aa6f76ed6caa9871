"""Synthetic shapes: the embedded segmentation data set that needs no download.

Each example is drawn with NumPy from its own generator
`np.random.default_rng((seed, split_id, index))`, so it depends only on (seed, split,
index): the same on every machine and run, and the splits never share an image. An
image (default 128 x 128 RGB) has a background clutter texture (a colour gradient,
low-contrast stripes and noise, all class 0) under 1..`max_instances` shapes (circle,
square, triangle) of random size, position and colour, painted in order, so later
shapes may hide parts of earlier ones.

Features (`with_instances` adds the instance keys, padded to `max_instances` so
shapes stay static):
  image           uint8 [H, W, 3]
  mask            int32 [H, W]: the semantic mask (0 = background, k = CLASS_NAMES[k])
                  or, with target='binary', 1 = any shape, 0 = background
  instance_masks  uint8 [N, H, W]: the visible part of each shape (0/1)
  boxes           float32 [N, 4] boxes_xyxy, absolute pixels in the continuous
                  convention of data/augment_warp.py: the tight box of the visible mask
  classes         int32 [N]: the shape class 1..3 (0 for padding)
  instance_valid  bool [N]: False for padding and for shapes hidden below
                  `min_visible_pixels` visible pixels (their mask and box are zero)
`write_coco` writes a split as COCO-format JSON + PNG files.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from data.sources import SOURCES, Source

CLASS_NAMES = ('background', 'circle', 'square', 'triangle')
BINARY_CLASS_NAMES = ('background', 'shape')
SPLIT_IDS = {'train': 0, 'val': 1, 'validation': 1, 'test': 2}


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates (x, y), each [H, W] float32."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  return x, y


def _shape_mask(kind: int, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float,
                angle: float) -> np.ndarray:
  """bool [H, W] of shape `kind` (1 circle, 2 square, 3 triangle) around (cx, cy)."""
  dx, dy = x - cx, y - cy
  if kind == 1:
    return dx * dx + dy * dy <= r * r
  # Rotate the frame so that square and triangle take any orientation.
  c, s = np.cos(angle), np.sin(angle)
  u, v = c * dx + s * dy, -s * dx + c * dy
  if kind == 2:
    half = r / np.sqrt(2.0) * 1.15  # about the circle's area
    return (np.abs(u) <= half) & (np.abs(v) <= half)
  # Equilateral triangle inscribed in a circle of radius 1.2 r: inside all three edges.
  inside = np.ones_like(u, bool)
  for k in range(3):
    theta = angle + 2 * np.pi * k / 3
    normal = np.array([np.cos(theta), np.sin(theta)], np.float32)
    inside &= (dx * normal[0] + dy * normal[1]) <= 0.6 * r
  return inside


def _background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """float32 [H, W, 3] clutter: a colour gradient, faint stripes and pixel noise."""
  height, width = x.shape
  corners = rng.uniform(0, 255, (2, 3)).astype(np.float32)
  t = ((x / width + y / height) / 2)[..., None]
  image = corners[0] * (1 - t) + corners[1] * t
  freq = rng.uniform(0.1, 0.6)
  theta = rng.uniform(0, np.pi)
  stripes = np.sin(freq * (np.cos(theta) * x + np.sin(theta) * y))[..., None]
  image += rng.uniform(5, 25) * stripes * rng.uniform(-1, 1, 3).astype(np.float32)
  return image + rng.normal(0, 6, image.shape).astype(np.float32)


def make_example(seed: int, split_id: int, index: int, image_size: Sequence[int] = (128, 128),
                 max_instances: int = 6, min_instances: int = 1,
                 min_visible_pixels: int = 8, size_range: Sequence[float] = (0.08, 0.2)
                 ) -> dict[str, np.ndarray]:
  """One example as NumPy arrays (see the module docstring for the keys).

  size_range: a shape's radius as a fraction of the shorter image side, uniform.
  """
  height, width = (int(d) for d in image_size)
  rng = np.random.default_rng((seed, split_id, index))
  x, y = _grid(height, width)
  image = _background(rng, x, y)
  semantic = np.zeros((height, width), np.int32)
  owner = np.full((height, width), -1, np.int32)  # which instance paints each pixel
  count = int(rng.integers(min_instances, max_instances + 1))
  classes = rng.integers(1, len(CLASS_NAMES), count).astype(np.int32)
  side = min(height, width)
  for i, kind in enumerate(classes):
    r = rng.uniform(*size_range) * side
    cx, cy = rng.uniform(r * 0.5, width - r * 0.5), rng.uniform(r * 0.5, height - r * 0.5)
    region = _shape_mask(int(kind), x, y, cx, cy, r, rng.uniform(0, 2 * np.pi))
    color = rng.uniform(0, 255, 3).astype(np.float32)
    # Shade across the shape so that colour alone never equals the class.
    shade = 1.0 + 0.25 * ((x - cx) / max(r, 1.0))[..., None] * rng.uniform(-1, 1)
    image = np.where(region[..., None], color * shade, image)
    semantic[region] = kind
    owner[region] = i
  instance_masks = np.zeros((max_instances, height, width), np.uint8)
  boxes = np.zeros((max_instances, 4), np.float32)
  valid = np.zeros(max_instances, bool)
  padded_classes = np.zeros(max_instances, np.int32)
  for i in range(count):
    visible = owner == i
    if visible.sum() < min_visible_pixels:
      continue  # hidden under later shapes: not an instance any more
    rows, cols = np.nonzero(visible)
    instance_masks[i] = visible
    boxes[i] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    valid[i] = True
    padded_classes[i] = classes[i]
  return {'image': np.clip(np.round(image), 0, 255).astype(np.uint8), 'mask': semantic,
          'instance_masks': instance_masks, 'boxes': boxes, 'classes': padded_classes,
          'instance_valid': valid}


def make_split(num_examples: int, seed: int = 0, split: str = 'train',
               **kwargs: Any) -> dict[str, np.ndarray]:
  """`num_examples` examples of `split`, stacked: every key gets a leading [N]."""
  if split not in SPLIT_IDS:
    raise ValueError(f'data/shapes.py: split {split!r}; expected one of {sorted(SPLIT_IDS)}.')
  examples = [make_example(seed, SPLIT_IDS[split], i, **kwargs) for i in range(num_examples)]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@SOURCES.register('shapes')
def shapes_source(split: str, train_examples: int = 2000, eval_examples: int = 500,
                  seed: int = 0, image_size: Sequence[int] = (128, 128),
                  max_instances: int = 6, min_instances: int = 1,
                  size_range: Sequence[float] = (0.08, 0.2), target: str = 'semantic',
                  with_instances: bool = False, **unused: Any) -> Source:
  """The shapes data set: `train_examples` for 'train', `eval_examples` for val/test.

  target: 'semantic' (mask 0..3) or 'binary' (mask 0/1). with_instances: add the
  instance keys (the instance segmentation task needs them; semantic training does
  not, and they cost `max_instances` x H x W bytes per example).
  """
  if target not in ('semantic', 'binary'):
    raise ValueError(f"data/shapes.py: config.data.target={target!r}; expected 'semantic' "
                     "or 'binary'.")
  num = train_examples if split == 'train' else eval_examples
  arrays = make_split(num, seed, split, image_size=image_size, max_instances=max_instances,
                      min_instances=min_instances, size_range=tuple(size_range))
  if target == 'binary':
    arrays['mask'] = (arrays['mask'] > 0).astype(np.int32)
  if not with_instances:
    arrays = {'image': arrays['image'], 'mask': arrays['mask']}
  names = CLASS_NAMES if target == 'semantic' else BINARY_CLASS_NAMES
  height, width = (int(d) for d in image_size)
  return Source(tf.data.Dataset.from_tensor_slices(arrays), num, names, (height, width, 3))


def write_coco(directory: str, num_examples: int, seed: int = 0, split: str = 'train',
               **kwargs: Any) -> str:
  """Writes `directory/images/<split>/NNNNN.png` and `directory/annotations/
  instances_<split>.json` (COCO instances schema, compressed-RLE masks, category ids
  1..3 as in CLASS_NAMES); returns the JSON path. Only valid instances are written.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top  (only for writing)
  from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
  image_dir = os.path.join(directory, 'images', split)
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(os.path.join(directory, 'annotations'), exist_ok=True)
  images, annotations = [], []
  for index in range(num_examples):
    example = make_example(seed, SPLIT_IDS[split], index, **kwargs)
    file_name = f'{index:05d}.png'
    Image.fromarray(example['image']).save(os.path.join(image_dir, file_name))
    height, width = example['mask'].shape
    images.append({'id': index, 'file_name': file_name, 'height': height, 'width': width})
    for i in np.flatnonzero(example['instance_valid']):
      rle = mask_utils.encode(np.asfortranarray(example['instance_masks'][i]))
      x0, y0, x1, y1 = (float(v) for v in example['boxes'][i])
      annotations.append({
          'id': len(annotations) + 1, 'image_id': index,
          'category_id': int(example['classes'][i]),
          'segmentation': {'size': rle['size'], 'counts': rle['counts'].decode('ascii')},
          'area': float(example['instance_masks'][i].sum()),
          'bbox': [x0, y0, x1 - x0, y1 - y0], 'iscrowd': 0})
  coco = {'images': images, 'annotations': annotations,
          'categories': [{'id': k, 'name': name, 'supercategory': 'shape'}
                         for k, name in enumerate(CLASS_NAMES) if k > 0]}
  path = os.path.join(directory, 'annotations', f'instances_{split}.json')
  with open(path, 'w') as f:
    json.dump(coco, f)
  return path
