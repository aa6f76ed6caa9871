"""Instance-id label images as a source: the COCO source's features, checks, the cap."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from data import coco, instance_labels
from data.sources import build_source
from tests.conftest import shared_data_path


def _rectangles(height, width, rects):
  """uint16 [h, w] label image: rectangle k (y0, y1, x0, x1) gets id ids[k]."""
  label = np.zeros((height, width), np.uint16)
  for instance_id, (y0, y1, x0, x1) in rects.items():
    label[y0:y1, x0:x1] = instance_id
  return label


# Image a: 20 x 20 (no resize at 20 x 20); image b: 40 x 40 (resized by 1/2). Even
# edges, so the nearest 2x downscale (pixel centres 1, 3, ...) is label[1::2, 1::2].
LABEL_A = _rectangles(20, 20, {3: (2, 6, 4, 10), 7: (10, 18, 12, 16)})
LABEL_B = _rectangles(40, 40, {1: (4, 12, 6, 16), 2: (20, 30, 2, 8), 5: (30, 40, 30, 40)})


def _write(root, names_labels, split='train', image_mode='RGBA'):
  os.makedirs(root / 'images', exist_ok=True)
  os.makedirs(root / 'labels', exist_ok=True)
  for name, label in names_labels.items():
    gray = (np.arange(label.size).reshape(label.shape) % 200).astype(np.uint8)
    Image.fromarray(gray).convert(image_mode).save(root / 'images' / f'{name}.png')
    Image.fromarray(label).save(root / 'labels' / f'{name}.png')
  (root / f'{split}.txt').write_text('\n'.join(names_labels) + '\n')


def _source(root, **kwargs):
  return build_source({'source': 'instance_labels', 'data_dir': str(root),
                       'image_size': (20, 20), 'max_instances': 4, **kwargs}, 'train')


def test_features_match_the_coco_layout_and_the_label_images(tmp_path):
  _write(tmp_path, {'a': LABEL_A, 'b': LABEL_B})
  source = _source(tmp_path)
  assert source.num_examples == 2 and source.class_names == ('background', 'nucleus')
  assert source.image_shape == (20, 20, 3)
  first, second = list(source.dataset.as_numpy_iterator())
  assert set(first) == set(coco.output_signature((20, 20), 4))
  # Image a at its own size: instances in ascending id order, boxes xyxy.
  assert first['image_id'] == 1 and first['image_scale'] == 1.0
  np.testing.assert_array_equal(first['original_size'], [20, 20])
  np.testing.assert_array_equal(first['instance_valid'], [True, True, False, False])
  np.testing.assert_array_equal(first['classes'], [1, 1, 0, 0])
  np.testing.assert_allclose(first['boxes'][:2], [[4, 2, 10, 6], [12, 10, 16, 18]])
  np.testing.assert_array_equal(first['instance_masks'][0], LABEL_A == 3)
  np.testing.assert_array_equal(first['instance_masks'][1], LABEL_A == 7)
  assert not first['is_crowd'].any()
  # Image b, 40 x 40 -> 20 x 20: masks by nearest sampling, boxes scaled by 1/2.
  assert second['image_id'] == 2 and second['image_scale'] == 0.5
  np.testing.assert_array_equal(second['original_size'], [40, 40])
  small = LABEL_B[1::2, 1::2]
  for k, instance_id in enumerate((1, 2, 5)):
    np.testing.assert_array_equal(second['instance_masks'][k], small == instance_id)
  np.testing.assert_allclose(second['boxes'][:3], [[3, 2, 8, 6], [1, 10, 4, 15],
                                                   [15, 15, 20, 20]])
  assert np.asarray(second['image']).mean() > 0  # RGBA decoded as RGB


def test_ground_truth_is_a_coco_of_every_instance_at_the_original_size(tmp_path):
  _write(tmp_path, {'a': LABEL_A, 'b': LABEL_B})
  source = _source(tmp_path)
  truth = source.metadata['ground_truth']
  assert source.metadata['category_ids'] == (1,)
  assert source.metadata['image_names'] == ('a', 'b')
  assert sorted(truth.imgs) == [1, 2] and truth.imgs[2]['height'] == 40
  annotations = truth.loadAnns(truth.getAnnIds(imgIds=[2]))
  assert [a['bbox'] for a in annotations] == [[6, 4, 10, 8], [2, 20, 6, 10], [30, 30, 10, 10]]
  assert [a['area'] for a in annotations] == [80, 60, 100]
  np.testing.assert_array_equal(truth.annToMask(annotations[1]), LABEL_B == 2)
  assert len({a['id'] for a in truth.dataset['annotations']}) == 5


def test_more_instances_than_the_cap_keeps_the_largest_and_counts_the_rest(tmp_path):
  _write(tmp_path, {'a': LABEL_A, 'b': LABEL_B})
  with pytest.warns(UserWarning, match=r'1 of 5 instances dropped'):
    source = _source(tmp_path, max_instances=2)
  assert source.metadata['dropped_instances'] == 1
  _, second = list(source.dataset.as_numpy_iterator())
  # Of b's 80-, 60- and 100-pixel instances the two largest stay, in id order.
  np.testing.assert_array_equal(second['instance_masks'][0], LABEL_B[1::2, 1::2] == 1)
  np.testing.assert_array_equal(second['instance_masks'][1], LABEL_B[1::2, 1::2] == 5)
  # The ground truth keeps all of them.
  assert len(source.metadata['ground_truth'].dataset['annotations']) == 5
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert _source(tmp_path, max_instances=3).metadata['dropped_instances'] == 0


def test_an_image_without_instances_is_an_example_with_no_valid_rows(tmp_path):
  _write(tmp_path, {'empty': np.zeros((20, 20), np.uint16)})
  (example,) = list(_source(tmp_path).dataset.as_numpy_iterator())
  assert not example['instance_valid'].any() and not example['instance_masks'].any()


def test_missing_label_names_the_file(tmp_path):
  _write(tmp_path, {'a': LABEL_A})
  os.remove(tmp_path / 'labels' / 'a.png')
  with pytest.raises(FileNotFoundError, match=r'labels/a\.png does not exist'):
    _source(tmp_path)


def test_size_mismatch_names_both_files(tmp_path):
  _write(tmp_path, {'a': LABEL_A})
  Image.fromarray(np.zeros((20, 24), np.uint16)).save(tmp_path / 'labels' / 'a.png')
  with pytest.raises(instance_labels.LabelFormatError,
                     match=r'labels/a\.png: label image has \(h, w\) = \(20, 24\).*images/a\.png'):
    _source(tmp_path)


@pytest.mark.parametrize('label, mode', [(np.zeros((20, 20), np.uint8), "'L'"),
                                         (np.zeros((20, 20, 3), np.uint8), "'RGB'")])
def test_a_label_that_is_not_an_instance_id_map_is_rejected(tmp_path, label, mode):
  _write(tmp_path, {'a': LABEL_A})
  Image.fromarray(label).save(tmp_path / 'labels' / 'a.png')
  with pytest.raises(instance_labels.LabelFormatError,
                     match=rf'labels/a\.png: label image has PIL mode {mode}.*16-bit'):
    _source(tmp_path)


def test_missing_split_list_and_missing_image(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'train\.txt does not exist'):
    _source(tmp_path)
  _write(tmp_path, {'a': LABEL_A})
  os.remove(tmp_path / 'images' / 'a.png')
  with pytest.raises(FileNotFoundError, match=r'images/a\.png \(listed in train\.txt\)'):
    _source(tmp_path)


def test_real_nuclei_val_split_through_the_loader():
  root = shared_data_path('nuclei_dsb2018')
  source = build_source({'source': 'instance_labels', 'data_dir': root,
                         'image_size': (256, 256), 'max_instances': 100}, 'val')
  assert source.num_examples == 86
  # (The data's README says up to 375 per image; the most on one image here is 131, in
  # train, and 91 in val.)
  assert source.metadata['max_instances_per_image'] == 91
  assert source.metadata['dropped_instances'] == 0
  truth = source.metadata['ground_truth']
  assert len(truth.dataset['annotations']) == source.metadata['num_instances']
  example = next(source.dataset.as_numpy_iterator())
  assert example['image'].shape == (256, 256, 3) and example['instance_masks'].shape[0] == 100
  count = int(example['instance_valid'].sum())
  assert count == len(truth.getAnnIds(imgIds=[1])) > 0
  # Every kept mask is non-empty and lies inside its box.
  for mask, (x0, y0, x1, y1) in zip(example['instance_masks'][:count], example['boxes'][:count]):
    rows, cols = np.nonzero(mask)
    assert rows.size and rows.min() >= np.floor(y0) and cols.max() < np.ceil(x1)
