"""Synthetic shapes: deterministic per seed, masks agree with boxes, COCO export."""
import json

import numpy as np
import pytest

from data import shapes
from data.sources import build_source


def test_same_seed_same_examples_other_seed_or_split_differs():
  a = shapes.make_split(3, seed=5, split='train', image_size=(32, 40))
  b = shapes.make_split(3, seed=5, split='train', image_size=(32, 40))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  c = shapes.make_split(3, seed=6, split='train', image_size=(32, 40))
  d = shapes.make_split(3, seed=5, split='val', image_size=(32, 40))
  assert not np.array_equal(a['image'], c['image'])
  assert not np.array_equal(a['image'], d['image'])


def test_example_keys_shapes_and_dtypes():
  e = shapes.make_example(0, 0, 0, image_size=(48, 64), max_instances=5)
  assert e['image'].shape == (48, 64, 3) and e['image'].dtype == np.uint8
  assert e['mask'].shape == (48, 64) and e['mask'].dtype == np.int32
  assert e['instance_masks'].shape == (5, 48, 64)
  assert e['boxes'].shape == (5, 4) and e['boxes'].dtype == np.float32
  assert e['classes'].shape == (5,) and e['instance_valid'].dtype == bool


def test_masks_agree_with_boxes_classes_and_semantic_mask():
  for index in range(20):
    e = shapes.make_example(1, 0, index, image_size=(40, 56))
    union = np.zeros(e['mask'].shape, np.int32)
    for i in range(len(e['classes'])):
      m = e['instance_masks'][i].astype(bool)
      if not e['instance_valid'][i]:
        assert not m.any() and not e['boxes'][i].any() and e['classes'][i] == 0
        continue
      rows, cols = np.nonzero(m)
      np.testing.assert_array_equal(e['boxes'][i],
                                    [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
      # Every visible pixel of an instance carries its class in the semantic mask.
      assert (e['mask'][m] == e['classes'][i]).all()
      assert not (union[m] > 0).any(), 'instances overlap in their visible masks'
      union[m] = e['classes'][i]
    # Shapes hidden below the minimum visible size leave a few labelled pixels.
    assert ((e['mask'] > 0) & (union == 0)).sum() < 8 * len(e['classes'])
    assert (union[e['mask'] == 0] == 0).all()


def test_classes_and_overlaps_occur():
  data = shapes.make_split(40, seed=0, image_size=(64, 64))
  assert set(np.unique(data['mask'])) == {0, 1, 2, 3}
  drawn = data['classes'] > 0
  assert drawn.sum(1).max() >= 3


def test_source_semantic_and_binary_targets():
  config = {'source': 'shapes', 'train_examples': 6, 'eval_examples': 4,
            'image_size': (24, 32)}
  train = build_source(config, 'train')
  assert train.num_examples == 6 and train.image_shape == (24, 32, 3)
  assert train.class_names == shapes.CLASS_NAMES
  example = next(train.dataset.as_numpy_iterator())
  assert set(example) == {'image', 'mask'}
  binary = build_source({**config, 'target': 'binary', 'with_instances': True}, 'val')
  assert binary.num_examples == 4 and binary.class_names == ('background', 'shape')
  example = next(binary.dataset.as_numpy_iterator())
  assert set(np.unique(example['mask'])) <= {0, 1} and 'boxes' in example
  with pytest.raises(ValueError, match='target'):
    build_source({**config, 'target': 'panoptic'}, 'train')


def test_write_coco_round_trips_masks(tmp_path):
  from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = shapes.write_coco(str(tmp_path), 3, seed=2, split='val', image_size=(32, 32))
  with open(path) as f:
    coco = json.load(f)
  assert len(coco['images']) == 3 and [c['id'] for c in coco['categories']] == [1, 2, 3]
  example = shapes.make_example(2, shapes.SPLIT_IDS['val'], 0, image_size=(32, 32))
  image = np.asarray(Image.open(tmp_path / 'images' / 'val' / '00000.png'))
  np.testing.assert_array_equal(image, example['image'])
  annotations = [a for a in coco['annotations'] if a['image_id'] == 0]
  assert len(annotations) == example['instance_valid'].sum()
  for a, i in zip(annotations, np.flatnonzero(example['instance_valid'])):
    rle = {'size': a['segmentation']['size'], 'counts': a['segmentation']['counts'].encode()}
    np.testing.assert_array_equal(mask_utils.decode(rle), example['instance_masks'][i])
    x0, y0, x1, y1 = example['boxes'][i]
    assert a['bbox'] == [x0, y0, x1 - x0, y1 - y0] and a['category_id'] == example['classes'][i]


def test_size_range_sets_the_shape_size():
  small = shapes.make_split(10, image_size=(64, 64), max_instances=1, size_range=(0.05, 0.06))
  large = shapes.make_split(10, image_size=(64, 64), max_instances=1, size_range=(0.3, 0.31))
  assert (small['mask'] > 0).mean() * 8 < (large['mask'] > 0).mean()
