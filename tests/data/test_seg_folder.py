"""Paired image/mask folders: matching, clear errors, CamVid and ISBI layouts."""
import os

import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import seg_folder
from data.sources import build_source
from tests.conftest import shared_data_path


def _write(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  array = np.asarray(array, np.uint8)
  if array.ndim == 2:
    array = array[..., None]
  tf.io.write_file(path, tf.io.encode_png(array))


def _folder(root, names=('b', 'a', '10', '2'), size=(6, 8), mask_fn=None):
  rng = np.random.default_rng(0)
  for name in names:
    _write(os.path.join(root, 'train', f'{name}.png'), rng.integers(0, 256, size + (3,)))
    mask = rng.integers(0, 3, size) if mask_fn is None else mask_fn(name)
    _write(os.path.join(root, 'trainannot', f'{name}.png'), mask)
  return root


def _config(root, **kw):
  return {'source': 'seg_folder', 'data_dir': str(root), 'class_names': ('x', 'y', 'z'),
          'ignore_id': 255, **kw}


def test_pairs_are_matched_by_name_in_numeric_then_name_order(tmp_path):
  root = _folder(str(tmp_path))
  pairs = seg_folder.list_pairs(os.path.join(root, 'train'), os.path.join(root, 'trainannot'))
  assert [os.path.basename(i) for i, _ in pairs] == ['2.png', '10.png', 'a.png', 'b.png']
  assert all(os.path.basename(i) == os.path.basename(m) for i, m in pairs)
  source = build_source(_config(root), 'train')
  assert source.num_examples == 4 and source.image_shape == (6, 8, 3)
  example = next(source.dataset.as_numpy_iterator())
  assert example['mask'].dtype == np.int32 and example['mask'].shape == (6, 8)
  raw = tf.io.decode_png(tf.io.read_file(pairs[0][1])).numpy()[..., 0]
  np.testing.assert_array_equal(example['mask'], raw)


def test_image_without_mask_names_the_file(tmp_path):
  root = _folder(str(tmp_path))
  os.remove(os.path.join(root, 'trainannot', 'a.png'))
  with pytest.raises(seg_folder.SegFolderError, match=r'a\.png has no mask'):
    build_source(_config(root), 'train')


def test_size_mismatch_names_the_file(tmp_path):
  root = _folder(str(tmp_path))
  _write(os.path.join(root, 'trainannot', '10.png'), np.zeros((5, 8)))
  with pytest.raises(seg_folder.SegFolderError, match=r'10\.png: mask size \(5, 8\)'):
    build_source(_config(root), 'train')


def test_mask_value_outside_the_classes_names_the_file_when_decoded(tmp_path):
  root = _folder(str(tmp_path), mask_fn=lambda name: np.full((6, 8), 7 if name == 'b' else 1))
  source = build_source(_config(root), 'train')  # pixels are read lazily
  with pytest.raises(tf.errors.OpError, match=r'b\.png: mask values \[7\] outside'):
    list(source.dataset.as_numpy_iterator())
  # The ignore id itself is allowed.
  assert len(list(build_source(_config(root, ignore_id=7), 'train').dataset)) == 4


def test_header_errors_are_named_when_the_source_is_built(tmp_path):
  root = _folder(str(tmp_path))
  _write(os.path.join(root, 'train', 'a.png'), np.zeros((6, 9, 3)))
  _write(os.path.join(root, 'trainannot', 'a.png'), np.zeros((6, 9)))
  with pytest.raises(seg_folder.SegFolderError, match=re.escape(
      'a.png: shape (6, 9, 3), but ' + os.path.join(root, 'train', '2.png') + ' has (6, 8, 3)')):
    build_source(_config(root), 'train')
  Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(os.path.join(root, 'train', 'a.png'),
                                                      format='TIFF')
  with pytest.raises(seg_folder.SegFolderError, match=r'a\.png: image format TIFF'):
    build_source(_config(root), 'train')


def test_value_map_and_unmapped_value(tmp_path):
  raw = np.array([[0, 255], [255, 0]])
  np.testing.assert_array_equal(seg_folder.map_mask(raw, 'm.png', 2, None, {0: 0, 255: 1}),
                                [[0, 1], [1, 0]])
  with pytest.raises(seg_folder.SegFolderError, match=r'm\.png: mask value 128'):
    seg_folder.map_mask(np.array([[128]]), 'm.png', 2, None, {0: 0, 255: 1})


def test_camvid_folder():
  root = shared_data_path('camvid_240x180')
  source = build_source({'source': 'camvid', 'data_dir': root}, 'val')
  assert source.num_examples == 101 and source.image_shape == (180, 240, 3)
  assert len(source.class_names) == 11
  mask = next(source.dataset.as_numpy_iterator())['mask']
  assert set(np.unique(mask)) <= set(range(12))


def test_isbi_membrane_split_24_6():
  root = shared_data_path('isbi_membrane')
  train = build_source({'source': 'isbi_membrane', 'data_dir': root}, 'train')
  val = build_source({'source': 'isbi_membrane', 'data_dir': root}, 'val')
  assert (train.num_examples, val.num_examples) == (24, 6)
  assert val.image_shape == (512, 512, 1)
  mask = next(val.dataset.as_numpy_iterator())['mask']
  assert set(np.unique(mask)) == {0, 1} and 0.6 < mask.mean() < 0.9  # mostly cell
  with pytest.raises(ValueError, match='train_slices'):
    build_source({'source': 'isbi_membrane', 'data_dir': root, 'train_slices': 30}, 'train')


# Class ids 0..11 of a 6 x 8 mask, and a palette giving each id its own colour.
IDS = np.arange(48).reshape(6, 8) % 12
PALETTE = [(k * 20, 255 - k * 20, (k * 37) % 256) for k in range(12)]


def _mask_folder(root, mask_image):
  """One image with the PIL mask image `mask_image`; returns (config, mask path)."""
  _write(os.path.join(root, 'train', 'a.png'), np.zeros((6, 8, 3)))
  path = os.path.join(root, 'trainannot', 'a.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mask_image.save(path)
  return _config(root, class_names=tuple(f'c{k}' for k in range(12))), path


def _mask_of(config, **kw):
  source = build_source({**config, **kw}, 'train')
  return next(source.dataset.as_numpy_iterator())['mask']


@pytest.mark.parametrize('mode', ['L', 'RGB', 'RGBA', 'I;16'])
def test_class_ids_read_from_single_or_equal_channels(tmp_path, mode):
  if mode == 'L':
    image = Image.fromarray(IDS.astype(np.uint8), 'L')
  elif mode == 'I;16':
    image = Image.fromarray(IDS.astype(np.uint16))  # 16-bit grey
  else:
    channels = [IDS] * 3 + ([np.full_like(IDS, 255)] if mode == 'RGBA' else [])
    image = Image.fromarray(np.stack(channels, -1).astype(np.uint8), mode)
  config, _ = _mask_folder(str(tmp_path), image)
  np.testing.assert_array_equal(_mask_of(config), IDS)


def test_palette_png_reads_its_indices(tmp_path):
  # Pascal VOC's convention: the palette index is the class id, whatever its colour.
  image = Image.fromarray(IDS.astype(np.uint8), 'P')
  image.putpalette([v for colour in PALETTE for v in colour])
  config, _ = _mask_folder(str(tmp_path), image)
  np.testing.assert_array_equal(_mask_of(config), IDS)


def test_colour_coded_mask_is_refused_with_its_name(tmp_path):
  # Class id in the red channel only: read as luminance this was 0..3, silently.
  rgb = np.stack([IDS, np.zeros_like(IDS), np.zeros_like(IDS)], -1).astype(np.uint8)
  config, path = _mask_folder(str(tmp_path), Image.fromarray(rgb, 'RGB'))
  with pytest.raises(tf.errors.OpError, match=re.escape(
      f'{path}: mask has 3 channels that differ (RGB colour-coded?) in 44 pixels, e.g. '
      '(1, 0, 0); expected a single-channel class-id image')):
    _mask_of(config)


def test_translucent_alpha_is_refused(tmp_path):
  rgba = np.stack([IDS] * 3 + [np.full_like(IDS, 128)], -1).astype(np.uint8)
  config, path = _mask_folder(str(tmp_path), Image.fromarray(rgba, 'RGBA'))
  with pytest.raises(tf.errors.OpError, match=re.escape(
      f'{path}: mask has an alpha channel that is not opaque (48 pixels)')):
    _mask_of(config)


def test_palette_maps_colours_to_class_ids(tmp_path):
  rgb = np.asarray(PALETTE, np.uint8)[IDS]
  config, path = _mask_folder(str(tmp_path), Image.fromarray(rgb, 'RGB'))
  np.testing.assert_array_equal(_mask_of(config, palette=PALETTE), IDS)
  # The same colours as a palette PNG of other indices: mapped by colour, not index.
  indexed = Image.fromarray((11 - IDS).astype(np.uint8), 'P')
  indexed.putpalette([v for colour in PALETTE[::-1] for v in colour])
  indexed.save(path)
  np.testing.assert_array_equal(_mask_of(config, palette=PALETTE), IDS)
  with pytest.raises(tf.errors.OpError, match=re.escape(
      f'{path}: mask colours [(220, 35, 151)] are not in config.data.palette (4 pixels)')):
    _mask_of(config, palette=PALETTE[:11])
  with pytest.raises(seg_folder.SegFolderError, match='palette repeats a colour'):
    _mask_of(config, palette=PALETTE + [PALETTE[0]])
  with pytest.raises(seg_folder.SegFolderError, match=r'palette has shape \(12, 2\)'):
    _mask_of(config, palette=[c[:2] for c in PALETTE])


def test_undecodable_mask_is_named(tmp_path):
  config, path = _mask_folder(str(tmp_path), Image.fromarray(IDS.astype(np.uint8), 'L'))
  with open(path, 'wb') as f:
    f.write(b'not a png')
  with pytest.raises(seg_folder.SegFolderError, match=re.escape(f'{path}: cannot read the mask')):
    _mask_of(config)


def test_jpeg_mask_is_refused(tmp_path):
  # Lossy: class ids 0..11 come back changed along the edges, still inside 0..11.
  config, path = _mask_folder(str(tmp_path), Image.fromarray(IDS.astype(np.uint8), 'L'))
  os.remove(path)
  Image.fromarray(IDS.astype(np.uint8), 'L').save(
      path[:-4] + '.jpg', quality=90)
  with pytest.raises(seg_folder.SegFolderError, match='^' + re.escape(
      f'{path[:-4]}.jpg: mask is a JPEG, whose lossy compression')):
    _mask_of(config)
