"""COCO-format instance segmentation: an instances JSON plus a folder of images.

Reads the COCO instances schema (`images`, `annotations`, `categories`), e.g. COCO 2017,
../shared/data/coco128, or what data/shapes.py:write_coco writes. The JSON is read and
checked once, eagerly (a bad file or annotation is named before training starts). The
source's records are `{'index': int64 []}`, positions in the image list (ascending image
id order), so the training pipeline shuffles, shards and skips them before any image is
read; `Source.decode` reads, resizes and rasterises one example (PIL and pycocotools,
in a parallel tf.data map through data/sources.py:numpy_decode), so memory stays
bounded on big data.

Conventions:
- Category ids (any, e.g. COCO's 1..90 with gaps) become contiguous labels 1..K in
  ascending id order; 0 is background / padding. `Source.metadata['category_ids'][k - 1]`
  is the category id of label k (for writing results back in COCO ids).
- Every image is resized to fit `image_size` (H, W) keeping its aspect ratio (scale =
  min(H / h, W / w)), bilinear, then zero-padded at the bottom and right to exactly
  (H, W). Masks are resized nearest-neighbour (sampled at pixel centres), boxes scaled.
- Segmentations: polygons, compressed RLE (`counts` a string) and uncompressed RLE
  (`counts` a list) are all decoded with pycocotools.
- `iscrowd` regions are not targets but ignore regions: they are kept as instances with
  `is_crowd` True after the non-crowd ones, so geometric augmentation moves them with the
  image. Targets are `instance_valid & ~is_crowd`.
- Grayscale, RGBA (alpha dropped) and palette images become RGB.
- Every listed image file is checked when the source is built (data/coco_images.py):
  an unreadable, truncated or wrongly sized file is named with its image id before
  training starts, not as an anonymous decode error mid-run.

Features (N = max_instances, padded; padding rows are all zero / False):
  image           uint8 [H, W, 3]
  boxes           float32 [N, 4] boxes_xyxy, absolute pixels of the resized image in the
                  continuous convention of data/augment_warp.py (COCO bbox [x, y, w, h])
  classes         int32 [N]: labels 1..K (0 for padding)
  instance_masks  uint8 [N, H, W] (0/1)
  is_crowd        bool [N]
  instance_valid  bool [N]: True for every kept annotation, crowd ones included
  image_id        int64 []: the COCO image id
  image_scale     float32 []: resized / original size (the scale above)
  resized_size    int32 [2]: (h, w) of the resized image before padding, each side
                  rounded on its own (resized_extent); boxes and masks map back to the
                  original exactly per axis by original_size / resized_size
  original_size   int32 [2]: (h, w) of the original image
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from errors import UserError
from data.coco_images import check_images, load_image
from data.sources import SOURCES, Source, numpy_decode

# Names tried, in order, when the plain split name has no annotation file (COCO's own
# `train2017` / `val2017` layout, as in ../shared/data/coco128).
SPLIT_FALLBACKS = {'train': ('train2017',), 'val': ('val2017',),
                   'validation': ('val', 'val2017'), 'test': ('test2017',)}


# How far (pixels) a box may reach past an image edge before it is called an error.
BBOX_SLACK = 1.0


class CocoFormatError(UserError, ValueError):
  """A COCO JSON does not fit the instances schema; the message names the file and field."""


def resolve_paths(split: str, data_dir: str, annotation_file: str = '',
                  image_dir: str = '') -> tuple[str, str]:
  """(annotation JSON, image folder) of `split`.

  Defaults: `data_dir/annotations/instances_<s>.json` and `data_dir/images/<s>/`, where
  <s> is `split`, or else its SPLIT_FALLBACKS name ('train' -> 'train2017', 'val' ->
  'val2017'), the first that has a JSON. `annotation_file` and `image_dir` override
  them; both may hold `{split}` and are relative to `data_dir` unless absolute.
  """
  tried = []
  for name in (split, *SPLIT_FALLBACKS.get(split, ())):
    relative = (annotation_file.format(split=name) if annotation_file
                else os.path.join('annotations', f'instances_{name}.json'))
    json_path = os.path.join(data_dir, relative)
    if os.path.isfile(json_path):
      images = (image_dir.format(split=name) if image_dir else os.path.join('images', name))
      return json_path, os.path.join(data_dir, images)
    tried.append(json_path)
  raise FileNotFoundError(
      f'coco_json: no annotation file for split {split!r}: tried {tried} (set '
      'config.data.data_dir to the folder holding annotations/ and images/, or '
      'config.data.annotation_file).')


def _area(annotation: Mapping[str, Any]) -> float:
  if 'area' in annotation:
    return float(annotation['area'])
  return float(annotation['bbox'][2]) * float(annotation['bbox'][3])


def check_segmentation(segmentation: Any, height: int, width: int, where: str) -> None:
  """Raises ValueError (prefixed by `where`) unless `segmentation` is decodable at h x w."""
  if isinstance(segmentation, list):
    if not segmentation:
      raise CocoFormatError(
          f'{where}: field "segmentation" is an empty list; expected polygons '
          '[[x0, y0, x1, y1, x2, y2, ...], ...] or an RLE dict.')
    for polygon in segmentation:
      if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
          or not all(isinstance(v, (int, float)) for v in polygon)):
        shown = (f'{len(polygon)} numbers' if isinstance(polygon, list)
                 else type(polygon).__name__)
        raise CocoFormatError(
            f'{where}: field "segmentation" has a polygon of {shown}; expected '
            'an even number (>= 6) of coordinates x0, y0, x1, y1, ...')
  elif isinstance(segmentation, dict):
    size, counts = segmentation.get('size'), segmentation.get('counts')
    if counts is None or size is None:
      raise CocoFormatError(
          f'{where}: field "segmentation" is a dict without "counts" and '
          f'"size" (keys {sorted(segmentation)}); expected an RLE.')
    if list(size) != [height, width]:
      raise CocoFormatError(
          f'{where}: field "segmentation.size" is {list(size)}, but the '
          f'image has [height, width] = [{height}, {width}].')
    if isinstance(counts, list):
      if sum(counts) != height * width:
        raise CocoFormatError(
            f'{where}: field "segmentation.counts" (uncompressed RLE) sums '
            f'to {sum(counts)}; expected height * width = {height * width}.')
    elif not isinstance(counts, (str, bytes)):
      raise CocoFormatError(
          f'{where}: field "segmentation.counts" is a '
          f'{type(counts).__name__}; expected a string or a list of runs.')
  else:
    raise CocoFormatError(
        f'{where}: field "segmentation" is a {type(segmentation).__name__}; '
        'expected a list of polygons or an RLE dict.')


def check_bbox(bbox: Sequence[Any], height: int, width: int, where: str) -> None:
  """Raises CocoFormatError unless `bbox` is [x, y, w, h] of finite numbers inside the image.

  A box may reach BBOX_SLACK pixels past an edge (rounding); more is no COCO box, most
  often [x0, y0, x1, y1] written as [x, y, w, h], which clipping would hide.
  """
  if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox):
    raise CocoFormatError(f'{where}: field "bbox" is {bbox}; expected 4 finite numbers.')
  x, y, w, h = (float(v) for v in bbox)
  if w < 0 or h < 0:
    raise CocoFormatError(f'{where}: field "bbox" {bbox} has a negative width or height; '
                          'expected [x, y, width, height].')
  past = max(-x, -y, x + w - width, y + h - height)
  if past > BBOX_SLACK:
    raise CocoFormatError(
        f'{where}: field "bbox" {bbox} reaches {past:g} pixels past the image (width '
        f'{width}, height {height}); COCO boxes are [x, y, width, height] (is this '
        '[x0, y0, x1, y1]?).')


def load_annotations(json_path: str, image_dir: str
                     ) -> tuple[list[dict], dict[int, list[dict]], list[dict]]:
  """Reads and checks a COCO instances JSON.

  Returns (images sorted by id, annotations per image id in file order, categories
  sorted by id). Raises FileNotFoundError for the JSON or an image file, ValueError
  naming the field for anything else that does not fit the schema.
  """
  if not os.path.isfile(json_path):
    raise FileNotFoundError(f'coco_json: annotation file {json_path} does not exist.')
  with open(json_path) as f:
    try:
      coco = json.load(f)
    except json.JSONDecodeError as e:
      raise CocoFormatError(f'{json_path}: not valid JSON ({e}).') from e
  for field in ('images', 'annotations', 'categories'):
    if not isinstance(coco.get(field), list):
      raise CocoFormatError(
          f'{json_path}: field "{field}" is missing or not a list (COCO '
          'instances schema).')
  categories = sorted(coco['categories'], key=lambda c: c['id'])
  category_ids = [c['id'] for c in categories]
  if len(set(category_ids)) != len(category_ids):
    raise CocoFormatError(
        f'{json_path}: field "categories" repeats a category id: {category_ids}.')
  if not os.path.isdir(image_dir):
    raise FileNotFoundError(f'{json_path}: image folder {image_dir} does not exist (set '
                            'config.data.image_dir).')
  images = {}
  for image in coco['images']:
    missing = [k for k in ('id', 'file_name', 'height', 'width') if k not in image]
    if missing:
      raise CocoFormatError(
          f'{json_path}: an entry of field "images" lacks {missing}: {image}.')
    if image['id'] in images:
      raise CocoFormatError(
          f'{json_path}: field "images" repeats image id {image["id"]}.')
    if not os.path.isfile(os.path.join(image_dir, image['file_name'])):
      raise FileNotFoundError(
          f'{json_path}: image id {image["id"]} has file_name {image["file_name"]!r}, but '
          f'{os.path.join(image_dir, image["file_name"])} does not exist.')
    images[image['id']] = image
  known_categories = set(category_ids)
  per_image: dict[int, list[dict]] = {image_id: [] for image_id in images}
  for annotation in coco['annotations']:
    where = f'{json_path}: annotation id {annotation.get("id")}'
    image = images.get(annotation.get('image_id'))
    if image is None:
      raise CocoFormatError(
          f'{where}: field "image_id" {annotation.get("image_id")} is not '
          'an id in "images".')
    if annotation.get('category_id') not in known_categories:
      raise CocoFormatError(
          f'{where}: field "category_id" {annotation.get("category_id")} is '
          f'not an id in "categories" {category_ids}.')
    bbox = annotation.get('bbox')
    if not isinstance(bbox, list) or len(bbox) != 4:
      raise CocoFormatError(
          f'{where}: field "bbox" is {bbox!r}; expected [x, y, width, height].')
    check_bbox(bbox, image['height'], image['width'], where)
    check_segmentation(annotation.get('segmentation'), image['height'], image['width'],
                       where)
    per_image[image['id']].append(annotation)
  return [images[k] for k in sorted(images)], per_image, categories


def select_instances(annotations: Sequence[dict], max_instances: int) -> list[dict]:
  """Non-crowd then crowd annotations, each in file order, at most `max_instances`.

  When there are too many, the largest-area non-crowd ones are kept first, then the
  largest crowd regions fill what is left.
  """
  things = [a for a in annotations if not a.get('iscrowd', 0)]
  crowds = [a for a in annotations if a.get('iscrowd', 0)]

  def largest(group: list[dict], count: int) -> list[dict]:
    keep = sorted(sorted(range(len(group)), key=lambda i: -_area(group[i]))[:count])
    return [group[i] for i in keep]

  kept = largest(things, max_instances)
  return kept + largest(crowds, max_instances - len(kept))


def fit_size(height: int, width: int, image_size: Sequence[int]) -> tuple[float, int, int]:
  """(scale, resized height, resized width) fitting (h, w) into `image_size` (H, W)."""
  out_height, out_width = (int(d) for d in image_size)
  scale = min(out_height / height, out_width / width)
  return (scale, resized_extent(height, scale, out_height),
          resized_extent(width, scale, out_width))


def resized_extent(size: int, scale: float, limit: int) -> int:
  """An original side of `size` pixels resized by `scale`: rounded half up, in [1, limit].

  The one rule for the un-padded part of a resized image (tasks/instance/coco_eval.py crops
  predicted masks back to it).
  """
  return min(limit, max(1, int(np.floor(size * scale + 0.5))))


def nearest_indices(source: int, target: int) -> np.ndarray:
  """int64 [target]: the source pixel under each target pixel centre (nearest)."""
  centres = (np.arange(target) + 0.5) * (source / target)
  return np.minimum(centres.astype(np.int64), source - 1)


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
  """uint8 [h, w] 0/1 mask of a (checked) polygon list or RLE dict."""
  if isinstance(segmentation, list):
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  elif isinstance(segmentation['counts'], list):
    rle = mask_utils.frPyObjects(segmentation, height, width)
  else:
    counts = segmentation['counts']
    rle = {'size': list(segmentation['size']),
           'counts': counts.encode('ascii') if isinstance(counts, str) else counts}
  return mask_utils.decode(rle)


def load_example(image_info: Mapping[str, Any], annotations: Sequence[dict], image_dir: str,
                 label_of: Mapping[int, int], image_size: Sequence[int],
                 max_instances: int) -> dict[str, np.ndarray]:
  """One example (module docstring keys) from a checked image entry and its annotations."""
  out_height, out_width = (int(d) for d in image_size)
  height, width = int(image_info['height']), int(image_info['width'])
  path = os.path.join(image_dir, image_info['file_name'])
  pixels = load_image(path, image_info['id'])
  if pixels.shape[:2] != (height, width):
    raise CocoFormatError(
        f'{path}: image id {image_info["id"]} decodes to (h, w) = '
        f'{pixels.shape[:2]}, but the JSON says height={height}, width={width}.')
  scale, resized_height, resized_width = fit_size(height, width, image_size)
  if (resized_height, resized_width) != (height, width):
    pixels = np.asarray(Image.fromarray(pixels).resize((resized_width, resized_height),
                                                       Image.BILINEAR))
  image = np.zeros((out_height, out_width, 3), np.uint8)
  image[:resized_height, :resized_width] = pixels
  rows = nearest_indices(height, resized_height)
  cols = nearest_indices(width, resized_width)
  # Boxes follow the pixels: per-axis factors of the rounded resized size.
  factors = np.array([resized_width / width, resized_height / height] * 2, np.float32)
  limits = np.array([resized_width, resized_height] * 2, np.float32)
  boxes = np.zeros((max_instances, 4), np.float32)
  classes = np.zeros(max_instances, np.int32)
  masks = np.zeros((max_instances, out_height, out_width), np.uint8)
  is_crowd = np.zeros(max_instances, bool)
  valid = np.zeros(max_instances, bool)
  for i, annotation in enumerate(select_instances(annotations, max_instances)):
    x, y, w, h = (float(v) for v in annotation['bbox'])
    boxes[i] = np.clip(np.array([x, y, x + w, y + h], np.float32) * factors, 0, limits)
    classes[i] = label_of[annotation['category_id']]
    mask = decode_mask(annotation['segmentation'], height, width)
    masks[i, :resized_height, :resized_width] = mask[rows][:, cols]
    is_crowd[i] = bool(annotation.get('iscrowd', 0))
    valid[i] = True
  return {'image': image, 'boxes': boxes, 'classes': classes, 'instance_masks': masks,
          'is_crowd': is_crowd, 'instance_valid': valid,
          'image_id': np.int64(image_info['id']), 'image_scale': np.float32(scale),
          'resized_size': np.array([resized_height, resized_width], np.int32),
          'original_size': np.array([height, width], np.int32)}


def output_signature(image_size: Sequence[int], max_instances: int
                     ) -> dict[str, tf.TensorSpec]:
  """The static `tf.TensorSpec` of every feature (shared with data/coco_tfds.py)."""
  height, width = (int(d) for d in image_size)
  n = int(max_instances)
  return {'image': tf.TensorSpec((height, width, 3), tf.uint8),
          'boxes': tf.TensorSpec((n, 4), tf.float32),
          'classes': tf.TensorSpec((n,), tf.int32),
          'instance_masks': tf.TensorSpec((n, height, width), tf.uint8),
          'is_crowd': tf.TensorSpec((n,), tf.bool),
          'instance_valid': tf.TensorSpec((n,), tf.bool),
          'image_id': tf.TensorSpec((), tf.int64),
          'image_scale': tf.TensorSpec((), tf.float32),
          'resized_size': tf.TensorSpec((2,), tf.int32),
          'original_size': tf.TensorSpec((2,), tf.int32)}


def indexed_examples(images: Sequence[dict], per_image: Mapping[int, list[dict]],
                     image_dir: str, label_of: Mapping[int, int], image_size: Sequence[int],
                     max_instances: int) -> tuple[tf.data.Dataset, Any]:
  """(records `{'index': int64 []}` 0..n-1, decode) of checked image entries.

  decode gives `load_example` of `images[index]`: the module docstring's features.
  """
  def load(index: int) -> dict[str, np.ndarray]:
    image = images[int(index)]
    return load_example(image, per_image[image['id']], image_dir, label_of, image_size,
                        max_instances)

  records = tf.data.Dataset.range(len(images)).map(lambda index: {'index': index})
  return records, numpy_decode(load, output_signature(image_size, max_instances))


def warn_truncated(path: str, over: int, shown: Sequence[tuple[int, str, int, int]],
                   max_instances: int) -> None:
  """Warns that `over` images of `path` have more than `max_instances` annotations;
  `shown`: (image id, file name, annotations, non-crowd ones) of some of them."""
  if not over:
    return
  details = '; '.join(f'image id {image_id} ({file_name}): {count} annotations '
                      f'({non_crowd} non-crowd)'
                      for image_id, file_name, count, non_crowd in shown)
  warnings.warn(f'{path}: {over} image(s) have more than max_instances='
                f'{max_instances} annotations; keeping the largest non-crowd ones, then '
                f'crowd: {details}{" ..." if over > len(shown) else ""}.', stacklevel=4)


def _warn_truncated(json_path: str, images: Sequence[dict], per_image: Mapping[int, list],
                    max_instances: int) -> None:
  over = [(image, per_image[image['id']]) for image in images
          if len(per_image[image['id']]) > max_instances]
  warn_truncated(json_path, len(over), [
      (image['id'], image['file_name'], len(anns), sum(not a.get('iscrowd', 0) for a in anns))
      for image, anns in over[:5]], max_instances)


@SOURCES.register('coco_json')
def coco_json_source(split: str, data_dir: str, annotation_file: str = '',
                     image_dir: str = '', image_size: Sequence[int] = (512, 512),
                     max_instances: int = 100, check_files: bool = True,
                     **unused: Any) -> Source:
  """COCO instances JSON + image folder of `split` (see resolve_paths for the layout).

  `split='train'` / `'val'` also find COCO's `train2017` / `val2017` files when no
  `instances_train.json` / `instances_val.json` exists. Every image is an example, with
  or without annotations. More than `max_instances` annotations on an image: the largest
  non-crowd ones are kept (then crowd), with one warning naming the images.
  `check_files` (default on) checks every listed image file's header, size and end
  before any work (data/coco_images.py; under a second per 10,000 images on a local
  disk); turn it off only for a folder already checked on slow storage.
  """
  json_path, images_path = resolve_paths(split, data_dir, annotation_file, image_dir)
  images, per_image, categories = load_annotations(json_path, images_path)
  if check_files:
    check_images(json_path, images_path, images)
  label_of = {c['id']: k + 1 for k, c in enumerate(categories)}
  _warn_truncated(json_path, images, per_image, max_instances)

  records, decode = indexed_examples(images, per_image, images_path, label_of, image_size,
                                     max_instances)
  height, width = (int(d) for d in image_size)
  metadata = {'category_ids': tuple(c['id'] for c in categories),
              'annotation_file': json_path, 'image_dir': images_path, 'has_masks': True}
  return Source(records, len(images), ('background', *(c['name'] for c in categories)),
                (height, width, 3), metadata, decode)
