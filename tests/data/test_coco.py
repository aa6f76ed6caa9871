"""COCO-format sources: a hand-written JSON, the shapes round trip, coco128, TFDS."""
import json
import os
import re

import chex
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from pycocotools import mask as mask_utils

from data import coco, coco_tfds, shapes
from data.sources import build_source
from tests.conftest import shared_data_path

SIZE = (20, 20)
MAX_INSTANCES = 4


def _rectangle(height, width, y0, y1, x0, x1):
  mask = np.zeros((height, width), np.uint8)
  mask[y0:y1, x0:x1] = 1
  return mask


def _uncompressed_rle(mask):
  """COCO uncompressed RLE, written independently of pycocotools: column-major runs,
  starting with a run of zeros."""
  flat = mask.flatten(order='F')
  changes = np.flatnonzero(np.diff(flat)) + 1
  bounds = np.concatenate([[0], changes, [flat.size]])
  runs = np.diff(bounds).tolist()
  if flat[0]:
    runs = [0] + runs
  return {'size': list(mask.shape), 'counts': runs}


def _compressed_rle(mask):
  rle = mask_utils.encode(np.asfortranarray(mask))
  return {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}


# Hand-drawn masks at the original sizes; every edge is even so that the 2x nearest
# downscale (sampling pixel centres, i.e. rows 1, 3, 5, ...) is mask[1::2, 1::2].
POLY_MASK = _rectangle(40, 40, 4, 12, 6, 16)         # image 2, 40 x 40, RGB
RLE_MASK = _rectangle(40, 20, 10, 30, 2, 8)          # image 5, 40 x 20, RGBA
CROWD_MASK = _rectangle(40, 20, 30, 40, 10, 20)      # image 5, crowd
LIST_RLE_MASK = _rectangle(20, 40, 2, 16, 20, 36)    # image 9, 20 x 40, grayscale


def _annotation(ann_id, image_id, category_id, segmentation, bbox, iscrowd=0):
  return {'id': ann_id, 'image_id': image_id, 'category_id': category_id,
          'segmentation': segmentation, 'bbox': bbox, 'area': float(bbox[2] * bbox[3]),
          'iscrowd': iscrowd}


def _write_dataset(root):
  """Writes root/images/train/*.png; returns the JSON dict (not yet written)."""
  image_dir = os.path.join(root, 'images', 'train')
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  Image.fromarray(np.full((40, 40, 3), (200, 50, 25), np.uint8)).save(
      os.path.join(image_dir, 'poly.png'))
  rgba = np.zeros((40, 20, 4), np.uint8)
  rgba[:] = (10, 20, 30, 128)
  Image.fromarray(rgba, 'RGBA').save(os.path.join(image_dir, 'rgba.png'))
  Image.fromarray(np.full((20, 40), 100, np.uint8), 'L').save(
      os.path.join(image_dir, 'gray.png'))
  palette = Image.fromarray(np.zeros((40, 40), np.uint8), 'P')
  palette.putpalette([7, 8, 9] * 256)
  palette.save(os.path.join(image_dir, 'empty.png'))
  return {
      'images': [  # not in id order: the source sorts by id
          {'id': 9, 'file_name': 'gray.png', 'height': 20, 'width': 40},
          {'id': 2, 'file_name': 'poly.png', 'height': 40, 'width': 40},
          {'id': 14, 'file_name': 'empty.png', 'height': 40, 'width': 40},
          {'id': 5, 'file_name': 'rgba.png', 'height': 40, 'width': 20}],
      'annotations': [
          _annotation(1, 2, 7, [[6, 4, 16, 4, 16, 12, 6, 12]], [6, 4, 10, 8]),
          _annotation(2, 5, 7, _uncompressed_rle(CROWD_MASK), [10, 30, 10, 10], iscrowd=1),
          _annotation(3, 5, 3, _compressed_rle(RLE_MASK), [2, 10, 6, 20]),
          _annotation(4, 9, 3, _uncompressed_rle(LIST_RLE_MASK), [20, 2, 16, 14])],
      'categories': [{'id': 7, 'name': 'seven'}, {'id': 3, 'name': 'three'}]}


def _save(root, data):
  path = os.path.join(root, 'annotations', 'instances_train.json')
  with open(path, 'w') as f:
    json.dump(data, f)
  return path


def _load(root, **kwargs):
  config = {'source': 'coco_json', 'data_dir': str(root), 'image_size': SIZE,
            'max_instances': MAX_INSTANCES, **kwargs}
  source = build_source(config, 'train')
  return source, {int(e['image_id']): e for e in source.dataset.as_numpy_iterator()}


@pytest.fixture(scope='module')
def hand_made(tmp_path_factory):
  root = tmp_path_factory.mktemp('coco')
  _save(root, _write_dataset(root))
  return _load(root)


def test_source_record_and_category_mapping(hand_made):
  source, _ = hand_made
  assert source.num_examples == 4 and source.image_shape == (20, 20, 3)
  assert tuple(source.class_names) == ('background', 'three', 'seven')
  assert source.metadata['category_ids'] == (3, 7)
  assert source.metadata['has_masks']
  assert source.metadata['annotation_file'].endswith('instances_train.json')
  ids = [int(e['image_id']) for e in source.dataset.as_numpy_iterator()]
  assert ids == [2, 5, 9, 14]


def test_static_shapes_and_dtypes(hand_made):
  _, examples = hand_made
  for e in examples.values():
    chex.assert_shape(e['image'], (20, 20, 3))
    chex.assert_shape(e['boxes'], (MAX_INSTANCES, 4))
    chex.assert_shape(e['instance_masks'], (MAX_INSTANCES, 20, 20))
    assert e['resized_size'].dtype == np.int32 and e['resized_size'].shape == (2,)
    for key in ('classes', 'is_crowd', 'instance_valid'):
      chex.assert_shape(e[key], (MAX_INSTANCES,))
    assert e['image'].dtype == np.uint8 and e['instance_masks'].dtype == np.uint8
    assert e['boxes'].dtype == np.float32 and e['classes'].dtype == np.int32
    assert e['is_crowd'].dtype == bool and e['instance_valid'].dtype == bool


def test_polygon_mask_box_and_class(hand_made):
  e = hand_made[1][2]
  np.testing.assert_array_equal(e['instance_masks'][0], POLY_MASK[1::2, 1::2])
  np.testing.assert_allclose(e['boxes'][0], [3, 2, 8, 6])
  np.testing.assert_array_equal(e['classes'], [2, 0, 0, 0])  # category 7 -> label 2
  np.testing.assert_array_equal(e['instance_valid'], [True, False, False, False])
  assert e['image_scale'] == pytest.approx(0.5)
  np.testing.assert_array_equal(e['original_size'], [40, 40])
  np.testing.assert_array_equal(e['resized_size'], [20, 20])


def test_compressed_rle_and_crowd_after_targets(hand_made):
  e = hand_made[1][5]  # 40 x 20 -> 20 x 10, zero padding on the right
  np.testing.assert_array_equal(e['instance_masks'][0, :, :10], RLE_MASK[1::2, 1::2])
  np.testing.assert_array_equal(e['instance_masks'][1, :, :10], CROWD_MASK[1::2, 1::2])
  assert not e['instance_masks'][:, :, 10:].any()
  np.testing.assert_allclose(e['boxes'][:2], [[1, 5, 4, 15], [5, 15, 10, 20]])
  np.testing.assert_array_equal(e['classes'][:3], [1, 2, 0])
  np.testing.assert_array_equal(e['is_crowd'], [False, True, False, False])
  np.testing.assert_array_equal(e['instance_valid'], [True, True, False, False])
  assert (e['instance_valid'] & ~e['is_crowd']).sum() == 1  # the crowd is no target
  np.testing.assert_array_equal(e['original_size'], [40, 20])
  np.testing.assert_array_equal(e['resized_size'], [20, 10])


def test_uncompressed_rle_mask_and_bottom_padding(hand_made):
  e = hand_made[1][9]  # 20 x 40 -> 10 x 20, zero padding at the bottom
  np.testing.assert_array_equal(e['instance_masks'][0, :10], LIST_RLE_MASK[1::2, 1::2])
  np.testing.assert_allclose(e['boxes'][0], [10, 1, 18, 8])
  assert e['classes'][0] == 1
  assert not e['image'][10:].any()


def test_images_become_rgb(hand_made):
  examples = hand_made[1]
  np.testing.assert_array_equal(examples[9]['image'][:10], np.full((10, 20, 3), 100))
  np.testing.assert_array_equal(examples[5]['image'][:, :10], np.full((20, 10, 3),
                                                                        (10, 20, 30)))
  np.testing.assert_array_equal(examples[14]['image'], np.full((20, 20, 3), (7, 8, 9)))
  np.testing.assert_array_equal(examples[2]['image'], np.full((20, 20, 3), (200, 50, 25)))


def test_image_without_annotations_is_all_padding(hand_made):
  e = hand_made[1][14]
  assert not e['instance_valid'].any() and not e['is_crowd'].any()
  assert not e['classes'].any() and not e['boxes'].any() and not e['instance_masks'].any()


def test_too_many_instances_keeps_largest_and_warns(tmp_path):
  data = _write_dataset(tmp_path)
  data['annotations'] += [  # image 2 now has 3 non-crowd annotations (areas 80, 4, 36)
      _annotation(5, 2, 3, [[0, 0, 2, 0, 2, 2, 0, 2]], [0, 0, 2, 2]),
      _annotation(6, 2, 3, [[20, 20, 26, 20, 26, 26, 20, 26]], [20, 20, 6, 6])]
  _save(tmp_path, data)
  with pytest.warns(UserWarning, match=r'image id 2 \(poly.png\): 3 annotations'):
    _, examples = _load(tmp_path, max_instances=2)
  e = examples[2]
  np.testing.assert_array_equal(e['classes'], [2, 1])  # annotations 1 and 6, file order
  np.testing.assert_allclose(e['boxes'][1], [10, 10, 13, 13])
  e = examples[5]  # one non-crowd + one crowd fit exactly
  np.testing.assert_array_equal(e['is_crowd'], [False, True])


def _set(path, value):
  """A mutation of the JSON dict setting `data[path[0]][path[1]]...[path[-1]] = value`."""
  def mutate(data):
    target = data
    for key in path[:-1]:
      target = target[key]
    target[path[-1]] = value
  return mutate


@pytest.mark.parametrize('mutate, error, field', [
    (_set(('images', 1, 'file_name'), 'gone.png'), FileNotFoundError,
     r"image id 2 has file_name 'gone.png'"),
    (_set(('annotations', 0, 'image_id'), 99), ValueError,
     r'annotation id 1: field "image_id" 99'),
    (_set(('annotations', 0, 'category_id'), 4), ValueError,
     r'annotation id 1: field "category_id" 4'),
    (_set(('annotations', 0, 'segmentation'), [[1, 2, 3, 4]]), ValueError,
     r'annotation id 1: field "segmentation" has a polygon of 4 numbers'),
    (_set(('annotations', 0, 'segmentation'), [[1, 2, 3, 4, 5, 6, 7]]), ValueError,
     r'annotation id 1: field "segmentation" has a polygon of 7 numbers'),
    (_set(('annotations', 2, 'segmentation', 'size'), [20, 40]), ValueError,
     r'annotation id 3: field "segmentation.size" is \[20, 40\]'),
    (_set(('annotations', 3, 'segmentation', 'counts'), [5, 5]), ValueError,
     r'annotation id 4: field "segmentation.counts"'),
    (_set(('annotations', 0, 'segmentation'), 'polygon'), ValueError,
     r'annotation id 1: field "segmentation" is a str'),
    # [x0, y0, x1, y1] written as [x, y, w, h]: clipping would have hidden it.
    (_set(('annotations', 0, 'bbox'), [6, 4, 40, 12]), ValueError,
     r'annotation id 1: field "bbox" \[6, 4, 40, 12\] reaches 6 pixels past the image '
     r'\(width 40, height 40\); COCO boxes are \[x, y, width, height\]'),
    (_set(('annotations', 0, 'bbox'), [6, 4, -10, 8]), ValueError,
     r'annotation id 1: field "bbox" \[6, 4, -10, 8\] has a negative width'),
    (_set(('annotations', 0, 'bbox'), [6, 4, float('nan'), 8]), ValueError,
     r'annotation id 1: field "bbox" is \[6, 4, nan, 8\]; expected 4 finite numbers'),
])
def test_errors_name_file_and_field(tmp_path, mutate, error, field):
  data = _write_dataset(tmp_path)
  mutate(data)
  _save(tmp_path, data)
  with pytest.raises(error, match='instances_train.json: ' + field):
    _load(tmp_path)


def test_missing_json_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(
      os.path.join(str(tmp_path), 'annotations', 'instances_train.json'))):
    _load(tmp_path)


def test_round_trip_of_shapes_write_coco(tmp_path):
  shapes.write_coco(str(tmp_path), 3, seed=1, split='val', image_size=(64, 64))
  source = build_source({'source': 'coco_json', 'data_dir': str(tmp_path),
                         'image_size': (64, 64), 'max_instances': 6}, 'val')
  assert tuple(source.class_names) == shapes.CLASS_NAMES
  for index, got in enumerate(source.dataset.as_numpy_iterator()):
    want = shapes.make_example(1, shapes.SPLIT_IDS['val'], index, image_size=(64, 64))
    keep = want['instance_valid']
    count = int(keep.sum())
    assert got['image_id'] == index and got['image_scale'] == 1.0
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['instance_masks'][:count], want['instance_masks'][keep])
    np.testing.assert_array_equal(got['boxes'][:count], want['boxes'][keep])
    np.testing.assert_array_equal(got['classes'][:count], want['classes'][keep])
    assert got['instance_valid'].sum() == count and not got['is_crowd'].any()
    assert not got['instance_masks'][count:].any()


@pytest.mark.parametrize('split, crowd', [('train', 6), ('val', 5)])
def test_coco128_counts(split, crowd):
  root = shared_data_path('coco128')
  source = build_source({'source': 'coco_json', 'data_dir': root, 'image_size': (128, 128),
                         'max_instances': 100}, split)
  with open(source.metadata['annotation_file']) as f:
    data = json.load(f)
  assert source.metadata['annotation_file'].endswith(f'instances_{split}2017.json')
  assert source.num_examples == len(data['images']) == 100
  assert len(source.metadata['category_ids']) == len(source.class_names) - 1 == 80
  examples = list(source.dataset.as_numpy_iterator())
  assert [int(e['image_id']) for e in examples] == sorted(i['id'] for i in data['images'])
  targets = sum(int((e['instance_valid'] & ~e['is_crowd']).sum()) for e in examples)
  assert targets == sum(not a['iscrowd'] for a in data['annotations'])
  assert sum(int(e['is_crowd'].sum()) for e in examples) == crowd
  # Every kept annotation has some mask pixels before the downscale; the category ids
  # map back to the JSON's.
  first = next(e for e in examples if e['instance_valid'].any())
  anns = [a for a in data['annotations'] if a['image_id'] == first['image_id']]
  label_ids = [source.metadata['category_ids'][c - 1]
               for c in first['classes'][first['instance_valid']]]
  assert sorted(label_ids) == sorted(a['category_id'] for a in anns)


def test_nearest_resize_samples_pixel_centres():
  np.testing.assert_array_equal(coco.nearest_indices(4, 2), [1, 3])
  np.testing.assert_array_equal(coco.nearest_indices(5, 2), [1, 3])
  np.testing.assert_array_equal(coco.nearest_indices(3, 6), [0, 0, 1, 1, 2, 2])
  assert coco.fit_size(40, 20, (20, 20)) == (0.5, 20, 10)
  assert coco.fit_size(30, 60, (20, 20)) == (1 / 3, 10, 20)


def _tfds_example(height=40, width=20):
  return {'image': np.full((height, width, 3), 90, np.uint8),
          'image/id': np.int64(77),
          'objects': {'bbox': np.array([[0.25, 0.1, 0.75, 0.4], [0.5, 0.5, 1.0, 1.0],
                                        [0.0, 0.0, 0.1, 0.1]], np.float32),
                      'label': np.array([0, 79, 4], np.int64),
                      'is_crowd': np.array([False, True, False]),
                      'area': np.array([120, 200, 8], np.int64)}}


def test_tfds_conversion_of_one_example():
  got = coco_tfds.convert_example(_tfds_example(), SIZE, 4)
  got = {k: v.numpy() for k, v in got.items()}
  # 40 x 20 -> 20 x 10: x scales by 10, y by 20 (normalised coordinates).
  np.testing.assert_allclose(got['boxes'], [[1, 5, 4, 15], [0, 0, 1, 2], [5, 10, 10, 20],
                                            [0, 0, 0, 0]], atol=1e-5)
  np.testing.assert_array_equal(got['classes'], [1, 5, 80, 0])
  np.testing.assert_array_equal(got['is_crowd'], [False, False, True, False])
  np.testing.assert_array_equal(got['instance_valid'], [True, True, True, False])
  assert not got['instance_masks'].any() and got['instance_masks'].shape == (4, 20, 20)
  np.testing.assert_array_equal(got['image'][:, :10], np.full((20, 10, 3), 90))
  assert not got['image'][:, 10:].any()
  assert got['image_id'] == 77 and got['image_scale'] == pytest.approx(0.5)
  np.testing.assert_array_equal(got['original_size'], [40, 20])
  np.testing.assert_array_equal(got['resized_size'], [20, 10])
  # Fewer slots: non-crowd objects before the (larger) crowd, larger before smaller.
  two = coco_tfds.convert_example(_tfds_example(), SIZE, 2)
  np.testing.assert_array_equal(two['classes'], [1, 5])
  np.testing.assert_array_equal(two['is_crowd'], [False, False])
  one = coco_tfds.convert_example(_tfds_example(), SIZE, 1)
  np.testing.assert_array_equal(one['classes'], [1])
  assert coco_tfds.COCO_CATEGORY_IDS[79] == 90 and len(coco_tfds.COCO_CATEGORY_IDS) == 80


def test_tfds_source_on_mock_data():
  # TFDS's random mock data gives the `objects` fields different lengths, which no real
  # example has; so the mock yields hand-built examples instead.
  def as_dataset(self, split, decoders=None, **kwargs):
    del self, split, kwargs
    examples = [_tfds_example(), _tfds_example(30, 60)]
    if decoders and 'image' in decoders:  # the source decodes later: PNG, lossless
      examples = [{**e, 'image': tf.io.encode_png(e['image']).numpy()} for e in examples]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=tf.nest.map_structure(
            lambda x: tf.TensorSpec((None,) * np.ndim(x), tf.as_dtype(np.asarray(x).dtype)),
            examples[0])
    ).apply(tf.data.experimental.assert_cardinality(2))

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    source = build_source({'source': 'coco_tfds', 'image_size': SIZE, 'max_instances': 4},
                          'val')
    examples = list(source.dataset.as_numpy_iterator())
  assert source.num_examples == 2 and len(examples) == 2
  assert source.metadata['has_masks'] is False and source.metadata['tfds_split'] == 'validation'
  assert len(source.class_names) == 81 and source.image_shape == (20, 20, 3)
  assert examples[1]['image_scale'] == pytest.approx(1 / 3)
  np.testing.assert_array_equal(examples[1]['resized_size'], [10, 20])  # 30 x 60 -> 10 x 20
  chex.assert_shape(examples[1]['instance_masks'], (4, 20, 20))
