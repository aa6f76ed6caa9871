"""COCO evaluation: ground truth fed back as detections scores AP 1 (also through a
resize + pad, which proves the coordinate mapping), wrong or missing detections score
less, and the conversion matches hand-computed boxes and an independent resize."""
import contextlib
import io
import json
import os

import chex
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from PIL import Image

from data import shapes
from data.sources import build_source
from tests.conftest import shared_data_path
from tasks.instance import coco_eval
from tasks.instance import evaluation as instance_eval

NUM_IMAGES = 8
SIZE = (64, 64)


@pytest.fixture(scope='module')
def annotation_file(tmp_path_factory):
  return shapes.write_coco(str(tmp_path_factory.mktemp('shapes')), NUM_IMAGES, image_size=SIZE)


def _ground_truth_detections():
  """The shapes' own instances as detections at scale 1 (what write_coco wrote)."""
  examples = [shapes.make_example(0, shapes.SPLIT_IDS['train'], i, image_size=SIZE)
              for i in range(NUM_IMAGES)]
  arrays = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  detections = {'boxes_xyxy': arrays['boxes'], 'classes': arrays['classes'],
                'scores': np.ones(arrays['classes'].shape, np.float32),
                'masks': arrays['instance_masks'].astype(np.float32),
                'valid': arrays['instance_valid']}
  return detections, np.arange(NUM_IMAGES), np.tile(np.array(SIZE, np.int32), (NUM_IMAGES, 1))


def _to_coco(detections, resized=SIZE):
  _, image_ids, sizes = _ground_truth_detections()
  return coco_eval.detections_to_coco(detections, image_ids, np.tile(resized, (NUM_IMAGES, 1)),
                                      sizes, category_ids=(1, 2, 3))


def test_ground_truth_as_detections_scores_ap_one(annotation_file):
  detections, _, _ = _ground_truth_detections()
  metrics = coco_eval.evaluate(annotation_file, _to_coco(detections))
  for iou_type in ('bbox', 'segm'):
    np.testing.assert_allclose(metrics[iou_type]['AP'], 1.0, atol=1e-6)
    np.testing.assert_allclose(metrics[iou_type]['AP50'], 1.0, atol=1e-6)
    assert set(metrics[iou_type]) == set(coco_eval.STAT_NAMES)


def test_half_scale_padded_detections_map_back_to_the_original(annotation_file):
  detections, _, _ = _ground_truth_detections()
  # The model input: the image at half size (32 x 32) padded bottom/right to 40 x 48.
  # Without cutting the padding away, the masks would be stretched and misplaced.
  half = detections['masks'][:, :, ::2, ::2]
  padded = np.zeros(half.shape[:2] + (40, 48), np.float32)
  padded[:, :, :32, :32] = half
  scaled = dict(detections, boxes_xyxy=detections['boxes_xyxy'] * 0.5, masks=padded)
  metrics = coco_eval.evaluate(annotation_file, _to_coco(scaled, resized=(32, 32)))
  np.testing.assert_allclose(metrics['bbox']['AP50'], 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics['bbox']['AP'], 1.0, atol=1e-6)
  assert metrics['segm']['AP50'] > 0.9


def test_boxes_shifted_far_away_score_zero(annotation_file):
  detections, _, _ = _ground_truth_detections()
  # Past the bottom-right corner: clipped to the image, every box is empty.
  shifted = dict(detections, boxes_xyxy=detections['boxes_xyxy'] + 100.0)
  shifted.pop('masks')
  results = _to_coco(shifted)
  assert all(r['bbox'][2] == 0 and r['bbox'][3] == 0 for r in results)
  metrics = coco_eval.evaluate(annotation_file, results, iou_types=('bbox',))
  assert metrics['bbox']['AP'] == 0.0 and metrics['bbox']['AP50'] == 0.0
  # Shifted by half an image, a few large shapes still overlap a little, never by 75%.
  shifted['boxes_xyxy'] = detections['boxes_xyxy'] + 30.0
  metrics = coco_eval.evaluate(annotation_file, _to_coco(shifted), iou_types=('bbox',))
  assert metrics['bbox']['AP'] < 0.02 and metrics['bbox']['AP75'] == 0.0


def test_dropping_half_the_detections_lowers_recall(annotation_file):
  detections, _, _ = _ground_truth_detections()
  valid = detections['valid'].copy()
  kept = np.flatnonzero(valid.reshape(-1))
  valid.reshape(-1)[kept[::2]] = False  # every other true instance is missed
  metrics = coco_eval.evaluate(annotation_file, _to_coco(dict(detections, valid=valid)))
  expected_recall = (kept.size - kept[::2].size) / kept.size
  for iou_type in ('bbox', 'segm'):
    assert 0.3 < metrics[iou_type]['AR100'] < 1.0
    np.testing.assert_allclose(metrics[iou_type]['AR100'], expected_recall, atol=0.15)


def test_empty_results_score_zero_where_ground_truth_exists(annotation_file):
  report = coco_eval.evaluate_report(annotation_file, [])
  for iou_type in ('bbox', 'segm'):
    stats = report.metrics[iou_type]
    assert stats['AP'] == 0.0 and stats['AP50'] == 0.0 and stats['AR100'] == 0.0
    assert stats['APl'] == -1.0  # 64 x 64 images hold no object over 96^2 pixels
    assert 'Average Precision' in report.summaries[iou_type]
  assert report.per_category_ap['bbox'] == {'circle': 0.0, 'square': 0.0, 'triangle': 0.0}


def test_results_are_json_serialisable_with_str_counts(annotation_file):
  detections, _, _ = _ground_truth_detections()
  results = _to_coco(detections)
  assert len(results) == int(detections['valid'].sum())
  assert all(isinstance(r['segmentation']['counts'], str) for r in results)
  decoded = json.loads(json.dumps(results))
  assert decoded[0]['segmentation'] == results[0]['segmentation']


def test_boxes_scores_and_category_ids_by_hand():
  # One image, original (h, w) = (20, 40) shown at scale 2 (40 x 80) in a 48 x 96 input.
  detections = {'boxes_xyxy': np.array([[[10, 20, 50, 60], [0, 0, 4, 4], [-6, 2, 200, 8]]],
                                       np.float32),
                'scores': np.array([[0.9, 0.5, 0.3]], np.float32),
                'classes': np.array([[2, 1, 1]], np.int32),
                'valid': np.array([[True, False, True]])}
  results = coco_eval.detections_to_coco(detections, [42], [[40, 80]], [[20, 40]],
                                         category_ids=(7, 90))
  assert [r['category_id'] for r in results] == [90, 7]  # ids passed through
  assert [r['image_id'] for r in results] == [42, 42]
  # [10, 20, 50, 60] / 2 = [5, 10, 25, 30], y1 clipped to h = 20; [-3, 1, 100, 4] clipped.
  chex.assert_trees_all_close(results[0]['bbox'], [5.0, 10.0, 20.0, 10.0])
  chex.assert_trees_all_close(results[1]['bbox'], [0.0, 1.0, 40.0, 3.0])
  chex.assert_trees_all_close([r['score'] for r in results], [0.9, 0.3], rtol=1e-6)
  assert 'segmentation' not in results[0]
  with pytest.raises(ValueError, match='classes'):
    coco_eval.detections_to_coco(dict(detections, classes=np.array([[3, 1, 1]])), [42],
                                 [[40, 80]], [[20, 40]], category_ids=(7, 90))


def test_masks_are_cut_resized_bilinearly_and_thresholded():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (the reference only)
  rng = np.random.default_rng(0)
  probabilities = rng.uniform(size=(1, 2, 12, 16)).astype(np.float32)  # input 12 x 16
  # Original (h, w) = (7, 10) at scale 1.5: the un-padded region is (10.5 -> 11, 15).
  detections = {'boxes_xyxy': np.zeros((1, 2, 4), np.float32), 'scores': np.ones((1, 2)),
                'classes': np.ones((1, 2), np.int32), 'valid': np.ones((1, 2), bool),
                'masks': probabilities}
  results = coco_eval.detections_to_coco(detections, [0], [[11, 15]], [[7, 10]],
                                         category_ids=(1,))
  region = probabilities[0, :, :11, :15, None]
  expected = tf.image.resize(region, (7, 10), method='bilinear', antialias=False).numpy()
  for result, reference in zip(results, expected[..., 0] >= 0.5):
    decoded = mask_utils.decode(dict(result['segmentation'], counts=result['segmentation'][
        'counts'].encode('ascii')))
    chex.assert_shape(decoded, (7, 10))
    np.testing.assert_array_equal(decoded.astype(bool), reference)


def test_image_ids_restrict_the_evaluation(annotation_file):
  detections, _, _ = _ground_truth_detections()
  # Detections for images 0..3 only: perfect there, recall 0 over all images.
  only_first = dict(detections, valid=detections['valid'] & (np.arange(NUM_IMAGES) < 4)[:, None])
  results = _to_coco(only_first)
  restricted = coco_eval.evaluate(annotation_file, results, ('bbox',), image_ids=range(4))
  everything = coco_eval.evaluate(annotation_file, results, ('bbox',))
  np.testing.assert_allclose(restricted['bbox']['AP'], 1.0, atol=1e-6)
  assert everything['bbox']['AR100'] < 0.9


def test_format_table_holds_the_numbers():
  metrics = {'bbox': dict(zip(coco_eval.STAT_NAMES, [0.5, 0.75, 0.25, -1.0] + [0.1] * 8)),
             'segm': dict(zip(coco_eval.STAT_NAMES, [0.123] * 12))}
  table = coco_eval.format_table(metrics)
  lines = table.splitlines()
  assert lines[0].split('|')[2:8] == [' AP ', ' AP50 ', ' AP75 ', ' APs ', ' APm ', ' APl ']
  assert lines[2] == '| bbox | 50.0 | 75.0 | 25.0 | n/a | 10.0 | 10.0 |'
  assert lines[3].startswith('| segm | 12.3 |')


def test_coco128_ground_truth_with_original_category_ids():
  path = shared_data_path('coco128', 'annotations', 'instances_val2017.json')
  coco = coco_eval._load_ground_truth(path)  # pylint: disable=protected-access
  category_ids = sorted(coco.getCatIds())  # 80 ids up to 90, not contiguous
  label_of = {c: k + 1 for k, c in enumerate(category_ids)}
  image_ids = sorted(coco.getImgIds())[:3]
  results = []
  for image_id in image_ids:  # one image per batch: originals differ in size
    info = coco.loadImgs(image_id)[0]
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a['iscrowd']]
    x, y, w, h = np.array([a['bbox'] for a in anns], np.float32).T
    detections = {'boxes_xyxy': np.stack([x, y, x + w, y + h], -1)[None],
                  'scores': np.ones((1, len(anns)), np.float32),
                  'classes': np.array([[label_of[a['category_id']] for a in anns]], np.int32),
                  'valid': np.ones((1, len(anns)), bool),
                  'masks': np.stack([coco.annToMask(a) for a in anns])[None].astype(np.float32)}
    size = [[info['height'], info['width']]]
    results += coco_eval.detections_to_coco(detections, [image_id], size, size, category_ids)
  assert {r['category_id'] for r in results} == {
      a['category_id'] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_ids, iscrowd=False))}
  report = coco_eval.evaluate_report(coco, results, image_ids=image_ids)
  for iou_type in ('bbox', 'segm'):
    np.testing.assert_allclose(report.metrics[iou_type]['AP'], 1.0, atol=1e-6)
  seen = {c['name'] for c in coco.loadCats({r['category_id'] for r in results})}
  per_category = report.per_category_ap['segm']
  np.testing.assert_allclose([per_category[name] for name in sorted(seen)], 1.0, atol=1e-6)
  assert all(ap == -1.0 for name, ap in per_category.items() if name not in seen)


# Odd-sized originals (neither side divides evenly at any tested size), each with two
# 2 x 2 objects (one in the top-left corner, one on the right border), a box touching the
# bottom-right corner, a disc as compressed RLE and a crowd region.
ODD_SIZES = ((101, 77), (333, 250), (50, 97), (17, 200), (255, 255))


def _rle(mask):
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {'size': [int(s) for s in rle['size']], 'counts': rle['counts'].decode('ascii')}


def _write_odd_set(root):
  image_dir = os.path.join(root, 'images', 'val')
  os.makedirs(image_dir)
  os.makedirs(os.path.join(root, 'annotations'))
  rng = np.random.default_rng(0)
  images, annotations = [], []

  def add(image_id, category_id, segmentation, bbox, iscrowd=0):
    annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                        'category_id': category_id, 'segmentation': segmentation,
                        'bbox': [float(v) for v in bbox], 'iscrowd': iscrowd,
                        'area': float(bbox[2] * bbox[3])})

  for image_id, (height, width) in enumerate(ODD_SIZES, start=1):
    name = f'{image_id}.png'
    Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(
        os.path.join(image_dir, name))
    images.append({'id': image_id, 'file_name': name, 'height': height, 'width': width})
    for category_id, (x, y, w, h) in ((3, (0, 0, 2, 2)), (8, (width - 2, height // 2, 2, 2)),
                                      (3, (width - 13, height - 9, 13, 9))):
      add(image_id, category_id, [[x, y, x + w, y, x + w, y + h, x, y + h]], (x, y, w, h))
    yy, xx = np.mgrid[:height, :width]
    radius = min(height, width) / 4
    disc = (yy - height / 2) ** 2 + (xx - width / 3) ** 2 <= radius ** 2
    add(image_id, 8, _rle(disc), mask_utils.toBbox(mask_utils.encode(
        np.asfortranarray(disc.astype(np.uint8)))))
    crowd = np.zeros((height, width), bool)
    crowd[height // 2:, :width // 4] = True
    add(image_id, 3, _rle(crowd), (0, height // 2, width // 4, height - height // 2),
        iscrowd=1)
  with open(os.path.join(root, 'annotations', 'instances_val.json'), 'w') as f:
    json.dump({'images': images, 'annotations': annotations,
               'categories': [{'id': 3, 'name': 'three'}, {'id': 8, 'name': 'eight'}]}, f)
  return str(root)


@pytest.fixture(scope='module')
def odd_set(tmp_path_factory):
  return _write_odd_set(tmp_path_factory.mktemp('odd'))


def _odd_source(root, image_size):
  return build_source({'source': 'coco_json', 'data_dir': root, 'image_size': image_size,
                       'max_instances': 8}, 'val')


@pytest.mark.parametrize('image_size', [(64, 64), (128, 128), (256, 256), (96, 160)])
def test_ground_truth_through_the_source_and_back_scores_box_ap_one(odd_set, image_size):
  ceiling = instance_eval.resize_ceiling(_odd_source(odd_set, image_size))
  for name in ('AP', 'AP50', 'AP75', 'APs', 'AR100'):
    np.testing.assert_allclose(ceiling['bbox'][name], 1.0, atol=1e-9, err_msg=name)
  # Masks lose the 2 x 2 objects and some edge detail in the resize: a ceiling below 1.
  assert 0.2 < ceiling['segm']['AP'] < 1.0


def test_boxes_map_back_per_axis():
  # Original (h, w) = (7, 10) resized to (3, 4): y by 7/3, x by 10/4, not one factor.
  detections = {'boxes_xyxy': np.array([[[1, 1, 3, 2], [0, 0, 4, 3]]], np.float32),
                'scores': np.ones((1, 2), np.float32), 'classes': np.ones((1, 2), np.int32),
                'valid': np.ones((1, 2), bool)}
  results = coco_eval.detections_to_coco(detections, [5], [[3, 4]], [[7, 10]],
                                         category_ids=(1,))
  chex.assert_trees_all_close(results[0]['bbox'], [2.5, 7 / 3, 5.0, 7 / 3], rtol=1e-6)
  chex.assert_trees_all_close(results[1]['bbox'], [0.0, 0.0, 10.0, 7.0], rtol=1e-6)


def test_resize_ceiling_is_one_without_a_resize_and_lower_after_one(odd_set, annotation_file):
  # The shapes set read at its own size: targets are the annotations, both APs 1.
  source = build_source({'source': 'coco_json', 'data_dir': os.path.dirname(
      os.path.dirname(annotation_file)), 'image_size': SIZE, 'max_instances': 6}, 'train')
  ceiling = instance_eval.resize_ceiling(source)
  for iou_type in ('bbox', 'segm'):
    np.testing.assert_allclose(ceiling[iou_type]['AP'], 1.0, atol=1e-9)
  # The odd set: the coarser the resize, the lower the mask ceiling.
  small = instance_eval.resize_ceiling(_odd_source(odd_set, (64, 64)), iou_types=('segm',))
  large = instance_eval.resize_ceiling(_odd_source(odd_set, (512, 512)), iou_types=('segm',))
  assert small['segm']['AP'] < large['segm']['AP'] <= 1.0


def test_max_dets_beyond_100_counts_every_object_of_a_crowded_image():
  # 150 one-pixel-apart boxes on one image, each detected exactly: with COCO's default
  # maxDets (100) only two thirds can match; with [1, 100, 400] all do.
  truth = COCO()
  boxes = [[float(3 * (k % 15)), float(3 * (k // 15)), 2.0, 2.0] for k in range(150)]
  truth.dataset = {
      'images': [{'id': 1, 'height': 40, 'width': 50}],
      'categories': [{'id': 1, 'name': 'dot'}],
      'annotations': [{'id': k + 1, 'image_id': 1, 'category_id': 1, 'bbox': box,
                       'area': 4.0, 'iscrowd': 0} for k, box in enumerate(boxes)]}
  with contextlib.redirect_stdout(io.StringIO()):
    truth.createIndex()
  results = [{'image_id': 1, 'category_id': 1, 'bbox': box, 'score': 1.0 - k / 1000}
             for k, box in enumerate(boxes)]
  default = coco_eval.evaluate(truth, results, iou_types=('bbox',))['bbox']
  wide = coco_eval.evaluate(truth, results, iou_types=('bbox',), max_dets=(1, 100, 400))
  assert default['AP50'] < 0.7
  assert wide['bbox']['AP50'] == pytest.approx(1.0) and wide['bbox']['AR100'] == 1.0
  with pytest.raises(ValueError, match='three increasing'):
    coco_eval.evaluate(truth, results, max_dets=(400, 100))
