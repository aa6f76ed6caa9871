"""Paired image / mask folders for segmentation, e.g. CamVid and the ISBI membranes.

An image and its mask are matched by file name (the mask may have another
extension, e.g. `x.jpg` with `x.png`). Masks hold class ids 0..C-1 in one channel,
optionally through a `value_map` (e.g. ISBI's 0/255 -> 0/1), plus an `ignore_id`
for unlabelled pixels. `read_mask` reads the stored values, never a luminance: a grey
(L, I;16) mask as it is, a palette (P) PNG as its palette indices (Pascal VOC's
convention), an RGB or RGBA mask only if its three channels are equal everywhere (and
its alpha opaque), no JPEG (lossy: its edges hold wrong class ids). Any other colour
mask is refused with its file named, unless `palette` lists the RGB colour of each
value (entry k is the colour of value k), which maps colours to values explicitly.
Every pair's headers are read and checked when the source is built, so a bad file is
named before training: an image without a mask, a file that does not open, an image
format TensorFlow does not decode, a JPEG mask, a mask mode that holds no class ids,
an image and mask of different sizes, images of different sizes (batches need one
static shape), a malformed `palette`. The pixels are decoded lazily: the records are
`{'image': path, 'mask': path}` (string []), and `Source.decode` reads them after the
training pipeline's shuffle, shard and skip, in its parallel map (the image with
`tf.io.decode_image`, the mask with `read_mask` and `map_mask` through
data/sources.py:numpy_decode). What only the pixels show (a mask value outside the
declared classes or `value_map`, colour channels that differ, a translucent alpha, a
colour missing from `palette`) is raised when that example is decoded, as a
`tf.errors.OpError` whose message names the file. Examples: `{'image': uint8 [H, W, C],
'mask': int32 [H, W]}`, sorted by file name (numerically where the names are numbers).

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
from PIL import Image

from errors import UserError
from data.sources import SOURCES, Source, numpy_decode

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
# Formats tf.io.decode_image reads (PIL's names).
TF_IMAGE_FORMATS = ('PNG', 'JPEG', 'BMP', 'GIF')
# PIL modes of masks read_mask accepts (colour ones only with equal channels or a palette).
MASK_MODES = ('1', 'L', 'P', 'I', 'I;16', 'I;16B', 'I;16L', 'LA', 'RGB', 'RGBA')
CAMVID_CLASSES = ('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol',
                  'Fence', 'Car', 'Pedestrian', 'Bicyclist')
CAMVID_IGNORE = 11
ISBI_CLASSES = ('membrane', 'cell')  # label value 0 -> 0 (membrane), 255 -> 1 (cell)


class SegFolderError(UserError, ValueError):
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


def _header(path: str, what: str) -> tuple[str, str, tuple[int, int]]:
  """(PIL format, mode, (h, w)) of an image file, read from its header only."""
  try:
    with Image.open(path) as image:
      return image.format, image.mode, (image.size[1], image.size[0])
  except (OSError, SyntaxError, ValueError) as e:
    raise SegFolderError(f'{path}: cannot read the {what} ({type(e).__name__}: {e}).') from e


def _mask_error(path: str, what: str) -> SegFolderError:
  return SegFolderError(
      f'{path}: mask {what}; expected a single-channel class-id image (or set '
      'config.data.palette to the RGB colour of each class id).')


def check_palette(palette: Sequence[Sequence[int]]) -> np.ndarray:
  """int64 [K, 3] colours of `palette`; raises SegFolderError unless distinct RGB triples."""
  colours = np.asarray(palette, np.int64)
  if colours.ndim != 2 or colours.shape[1] != 3 or ((colours < 0) | (colours > 255)).any():
    raise SegFolderError(f'config.data.palette has shape {colours.shape}; expected a list '
                         'of (r, g, b) triples in 0..255, entry k the colour of class id k.')
  keys = colours @ np.array([65536, 256, 1])
  if len(set(keys.tolist())) != len(keys):
    raise SegFolderError(f'config.data.palette repeats a colour: {palette}.')
  return colours


def _palette_values(path: str, rgb: np.ndarray, palette: Sequence[Sequence[int]]
                    ) -> np.ndarray:
  """int32 [H, W]: the index in `palette` (RGB triples) of each pixel's colour."""
  colours = check_palette(palette)
  keys = colours @ np.array([65536, 256, 1])
  pixels = rgb[..., :3].astype(np.int64) @ np.array([65536, 256, 1])
  order = np.argsort(keys)
  position = np.clip(np.searchsorted(keys[order], pixels), 0, len(keys) - 1)
  found = keys[order][position] == pixels
  if not found.all():
    missing = np.unique(pixels[~found])
    shown = [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in missing[:5].tolist()]
    raise SegFolderError(
        f'{path}: mask colours {shown}{" ..." if missing.size > 5 else ""} are not in '
        f'config.data.palette ({int((~found).sum())} pixels).')
  return order[position].astype(np.int32)


def read_mask(path: str, palette: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
  """int32 [H, W]: the stored values of a mask file (see the module docstring).

  With `palette`, colour masks (RGB, RGBA, P as colours) map to the index of their
  colour in it; without, only single-channel values (or equal channels) are accepted.
  """
  try:
    with Image.open(path) as image:
      image_format = image.format
      if palette and image.mode in ('P', 'RGB', 'RGBA', 'L', 'LA'):
        image = image.convert('RGBA')
      mode = image.mode
      values = np.asarray(image)
  except (OSError, SyntaxError, ValueError) as e:
    raise SegFolderError(f'{path}: cannot read the mask ({type(e).__name__}: {e}).') from e
  if image_format == 'JPEG':
    raise SegFolderError(
        f'{path}: mask is a JPEG, whose lossy compression turns pixels along every edge '
        'into other values (other class ids, silently); store masks as PNG.')
  if mode in MASK_MODES[:-3]:
    return values.astype(np.int32)
  if mode not in MASK_MODES:
    raise _mask_error(path, f'has PIL mode {mode!r}')
  if mode in ('LA', 'RGBA') and (values[..., -1] != 255).any():
    raise _mask_error(path, f'has an alpha channel that is not opaque '
                            f'({int((values[..., -1] != 255).sum())} pixels)')
  if palette:
    return _palette_values(path, values, palette)
  if mode == 'LA':
    return values[..., 0].astype(np.int32)
  differ = (values[..., 0] != values[..., 1]) | (values[..., 0] != values[..., 2])
  if differ.any():
    first = tuple(int(v) for v in values[differ][0][:3])
    raise _mask_error(path, f'has {values.shape[-1]} channels that differ (RGB '
                            f'colour-coded?) in {int(differ.sum())} pixels, e.g. {first}')
  return values[..., 0].astype(np.int32)


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


def check_pairs(pairs: Sequence[tuple[str, str]], channels: int,
                palette: Optional[Sequence[Sequence[int]]] = None) -> tuple[int, int, int]:
  """The image shape (H, W, channels) shared by every pair; raises SegFolderError naming
  the file for what the headers show (module docstring). Reads no pixels."""
  if palette:
    check_palette(palette)
  shape = None
  for image_path, mask_path in pairs:
    image_format, _, size = _header(image_path, 'image')
    if image_format not in TF_IMAGE_FORMATS:
      raise SegFolderError(f'{image_path}: image format {image_format}; expected one of '
                           f'{TF_IMAGE_FORMATS} (what tf.io.decode_image reads).')
    mask_format, mode, mask_size = _header(mask_path, 'mask')
    if mask_format == 'JPEG':
      raise SegFolderError(
          f'{mask_path}: mask is a JPEG, whose lossy compression turns pixels along every '
          'edge into other values (other class ids, silently); store masks as PNG.')
    if mode not in MASK_MODES:
      raise _mask_error(mask_path, f'has PIL mode {mode!r}')
    if size != mask_size:
      raise SegFolderError(f'{mask_path}: mask size {mask_size} (H, W) differs from its image '
                           f'{image_path} {size}.')
    if shape is None:
      shape = size
    elif size != shape:
      raise SegFolderError(f'{image_path}: shape {(*size, channels)}, but {pairs[0][0]} has '
                           f'{(*shape, channels)}; every image must have one size (resize '
                           'the folder first).')
  return (*shape, channels)


def pair_decoder(image_shape: Sequence[int], num_classes: int, ignore_id: Optional[int],
                 value_map: Optional[Mapping[int, int]] = None,
                 palette: Optional[Sequence[Sequence[int]]] = None):
  """decode: `{'image': path, 'mask': path}` -> `{'image': uint8 image_shape, 'mask':
  int32 [H, W]}` (the mask's values checked and mapped by map_mask)."""
  height, width, channels = image_shape

  def load_mask(mask: bytes) -> dict[str, np.ndarray]:
    path = mask.decode()
    return {'mask': map_mask(read_mask(path, palette), path, num_classes, ignore_id,
                             value_map)}

  decode_mask = numpy_decode(load_mask, {'mask': tf.TensorSpec((height, width), tf.int32)})

  def decode(record: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = tf.io.decode_image(tf.io.read_file(record['image']), channels=channels,
                               expand_animations=False)
    return {'image': tf.ensure_shape(image, tuple(image_shape)),
            **decode_mask({'mask': record['mask']})}

  return decode


def _source(pairs, class_names, channels, ignore_id, value_map=None, palette=None) -> Source:
  shape = check_pairs(pairs, channels, palette)
  records = tf.data.Dataset.from_tensor_slices(
      {'image': [i for i, _ in pairs], 'mask': [m for _, m in pairs]})
  decode = pair_decoder(shape, len(class_names), ignore_id, value_map, palette)
  return Source(records, len(pairs), tuple(class_names), shape, decode=decode)


@SOURCES.register('seg_folder')
def seg_folder_source(split: str, data_dir: str, class_names: Sequence[str],
                      image_dir: str = '{split}', mask_dir: str = '{split}annot',
                      channels: int = 3, ignore_id: Optional[int] = 255,
                      value_map: Optional[Mapping[int, int]] = None,
                      palette: Sequence[Sequence[int]] = (), **unused: Any) -> Source:
  """`data_dir/<image_dir>` paired with `data_dir/<mask_dir>` (`{split}` substituted).

  palette: () for class-id masks; else the RGB colour of each value k (see read_mask),
  which `value_map`, `ignore_id` and the class range then apply to as to stored values.
  """
  pairs = list_pairs(os.path.join(data_dir, image_dir.format(split=split)),
                     os.path.join(data_dir, mask_dir.format(split=split)))
  return _source(pairs, class_names, channels, ignore_id, value_map, palette)


@SOURCES.register('camvid')
def camvid_source(split: str, data_dir: str = '../shared/data/camvid_240x180',
                  palette: Sequence[Sequence[int]] = (), **unused: Any) -> Source:
  """CamVid (SegNet layout): 'train' 367, 'val' 101, 'test' 233 images; void = 11.

  A colour-coded copy reads with `palette`: the 11 class colours in CAMVID_CLASSES
  order, then the void colour (value 11).
  """
  if split not in ('train', 'val', 'test'):
    raise ValueError(f"camvid: split {split!r}; expected 'train', 'val' or 'test'.")
  return seg_folder_source(split, data_dir, CAMVID_CLASSES, ignore_id=CAMVID_IGNORE,
                           palette=palette)


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
