"""COCO converted to TFRecords (data/coco_records.py) and read back by the `coco_records`
source: the same features as the `coco_json` source, errors that name the file."""
import contextlib
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from data import coco, coco_records, coco_records_source, pipeline, shapes
from data.sources import build_source
from tests.conftest import shared_data_path
from tests.data import test_coco

NON_IMAGE_KEYS = ('boxes', 'classes', 'instance_masks', 'is_crowd', 'instance_valid',
                  'image_id', 'image_scale', 'resized_size', 'original_size')


def _examples(config, split):
  source = build_source(config, split)
  return source, list(source.dataset.as_numpy_iterator())


def _both(data_dir, records_dir, split, **kwargs):
  """(coco_json examples, coco_records source, coco_records examples) of one split."""
  _, want = _examples({'source': 'coco_json', 'data_dir': data_dir, **kwargs}, split)
  source, got = _examples({'source': 'coco_records', 'data_dir': records_dir, **kwargs}, split)
  return want, source, got


def _assert_same(want, got, image_tolerance=0):
  assert [int(e['image_id']) for e in got] == [int(e['image_id']) for e in want]
  for w, g in zip(want, got):
    for key in (*NON_IMAGE_KEYS, 'image'):
      assert g[key].dtype == w[key].dtype and g[key].shape == w[key].shape, key
    for key in NON_IMAGE_KEYS:
      np.testing.assert_array_equal(g[key], w[key], err_msg=f'{key} of {w["image_id"]}')
    difference = np.abs(g['image'].astype(int) - w['image'].astype(int))
    assert difference.max() <= image_tolerance, (w['image_id'], difference.max())


@pytest.fixture(scope='module')
def hand_made(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('coco'))
  data = test_coco._write_dataset(root)  # pylint: disable=protected-access
  # Image 2 gets 3 non-crowd annotations (areas 80, 4, 36), for max_instances=2.
  data['annotations'] += [
      test_coco._annotation(5, 2, 3, [[0, 0, 2, 0, 2, 2, 0, 2]], [0, 0, 2, 2]),
      test_coco._annotation(6, 2, 3, [[20, 20, 26, 20, 26, 26, 20, 26]], [20, 20, 6, 6])]
  test_coco._save(root, data)  # pylint: disable=protected-access
  out = os.path.join(root, 'records')
  coco_records.main(['--data_dir', root, '--split', 'train', '--out_dir', out,
                     '--num_shards', '3', '--copy_annotations'])
  return root, out


@pytest.mark.parametrize('max_instances', [4, 2, 1])
def test_hand_made_features_equal_coco_json(hand_made, max_instances):
  # Polygons, compressed and uncompressed RLE, crowd, RGBA, grayscale, palette, an image
  # without annotations; 2x downscales; instances dropped by size (then crowd).
  root, out = hand_made
  expect = (pytest.warns(UserWarning, match='more than max_instances') if max_instances < 3
            else contextlib.nullcontext())
  with expect:
    want, _, got = _both(root, out, 'train', image_size=test_coco.SIZE,
                         max_instances=max_instances)
  _assert_same(want, got, image_tolerance=1)


def test_sidecar_metadata_and_atomic_files(hand_made):
  _, out = hand_made
  source = build_source({'source': 'coco_records', 'data_dir': out, 'image_size': (20, 20)},
                        'train')
  assert source.num_examples == 4 and tuple(source.class_names) == ('background', 'three',
                                                                     'seven')
  assert source.metadata['category_ids'] == (3, 7) and source.metadata['has_masks']
  # --copy_annotations: the ground truth lives in the converted folder.
  assert source.metadata['annotation_file'] == os.path.join(out, 'train_instances.json')
  with open(source.metadata['annotation_file']) as f:
    assert len(json.load(f)['annotations']) == 6
  assert sorted(os.listdir(out)) == ['train-00000-of-00003.tfrecord',
                                     'train-00001-of-00003.tfrecord',
                                     'train-00002-of-00003.tfrecord', 'train.json',
                                     'train_instances.json']  # no temporary file left
  with open(os.path.join(out, 'train.json')) as f:
    sidecar = json.load(f)
  assert [s['num_examples'] for s in sidecar['shards']] == [2, 1, 1]
  assert sidecar['annotations_per_image'] == {'0': 1, '1': 1, '2': 1, '3': 1}
  assert coco_records_source.verify(out, 'train') == 4


def test_errors_name_the_file(hand_made, tmp_path):
  root, out = hand_made
  config = {'source': 'coco_records', 'data_dir': str(tmp_path), 'image_size': (20, 20)}
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'train.json'))):
    build_source(config, 'train')
  with open(os.path.join(out, 'train.json')) as f:
    sidecar = json.load(f)
  for name in os.listdir(out):
    with open(os.path.join(out, name), 'rb') as src, open(tmp_path / name, 'wb') as dst:
      dst.write(src.read())
  (tmp_path / 'train.json').write_text(json.dumps({**sidecar, 'format_version': 0}))
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / 'train.json')) +
                     r': field "format_version" is 0'):
    build_source(config, 'train')
  (tmp_path / 'train.json').write_text(json.dumps(sidecar))
  shard = tmp_path / 'train-00001-of-00003.tfrecord'
  data = bytearray(shard.read_bytes())
  shard.write_bytes(bytes(data[:-10]))  # a partial copy: named when the source is built
  with pytest.raises(ValueError, match=re.escape(str(shard)) + ': the shard has'):
    build_source(config, 'train')
  data[len(data) // 2] ^= 0xFF  # damage in the middle: named by --verify
  shard.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=re.escape(str(shard)) + ': record 0 is damaged'):
    coco_records_source.verify(str(tmp_path), 'train')


def test_conversion_checks_like_coco_json(tmp_path):
  data = test_coco._write_dataset(str(tmp_path))  # pylint: disable=protected-access
  data['annotations'][0]['category_id'] = 4
  test_coco._save(str(tmp_path), data)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='instances_train.json: annotation id 1: field '
                     '"category_id" 4'):
    coco_records.convert(str(tmp_path), 'train', str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out' / 'train.json')


def test_round_trip_of_shapes_write_coco(tmp_path):
  shapes.write_coco(str(tmp_path), 5, seed=1, split='val', image_size=(64, 64))
  coco_records.convert(str(tmp_path), 'val', str(tmp_path / 'records'), num_shards=2)
  source = build_source({'source': 'coco_records', 'data_dir': str(tmp_path / 'records'),
                         'image_size': (64, 64), 'max_instances': 6}, 'val')
  for index, got in enumerate(source.dataset.as_numpy_iterator()):
    want = shapes.make_example(1, shapes.SPLIT_IDS['val'], index, image_size=(64, 64))
    keep = want['instance_valid']
    count = int(keep.sum())
    assert got['image_id'] == index and got['image_scale'] == 1.0
    np.testing.assert_array_equal(got['image'], want['image'])  # PNG, no resize: exact
    np.testing.assert_array_equal(got['instance_masks'][:count], want['instance_masks'][keep])
    np.testing.assert_array_equal(got['boxes'][:count], want['boxes'][keep])
    np.testing.assert_array_equal(got['classes'][:count], want['classes'][keep])
    assert got['instance_valid'].sum() == count and not got['instance_masks'][count:].any()
  assert index == 4  # pylint: disable=undefined-loop-variable


def test_train_batches_decode_records(tmp_path):
  shapes.write_coco(str(tmp_path), 6, seed=2, split='train', image_size=(32, 32))
  coco_records.convert(str(tmp_path), 'train', str(tmp_path / 'records'))
  source = build_source({'source': 'coco_records', 'data_dir': str(tmp_path / 'records'),
                         'image_size': (32, 32), 'max_instances': 6}, 'train')
  batches = list(pipeline.as_numpy(pipeline.train_batches(
      source.records, batch_size=3, seed=0, epoch=0, decode_fn=source.decode)))
  assert len(batches) == 2 and batches[0]['instance_masks'].shape == (3, 6, 32, 32)
  ids = sorted(int(i) for b in batches for i in b['image_id'])
  assert ids == list(range(6))


def test_sample_masks_reads_rle_at_pixels():
  rng = np.random.default_rng(0)
  masks = (rng.random((5, 7, 5)) < 0.5).astype(np.uint8)
  masks[1] = 1  # starts with ones: a zero-length first run
  masks[2] = 0
  masks[3] = 0
  masks[3, 2:5, 1:3] = 1  # columns without a change are filled without a search
  runs = [coco_records.uncompressed_rle(m) for m in masks]
  rles = tf.RaggedTensor.from_row_lengths(np.concatenate(runs), [len(r) for r in runs])
  rows, cols = np.array([6, 0, 3, 3]), np.array([4, 1, 0, 2])
  got = coco_records_source.sample_masks(rles, 7, 5, rows, cols).numpy()
  np.testing.assert_array_equal(got, masks[:, rows][:, :, cols])
  empty = coco_records_source.sample_masks(rles[:0], 7, 5, rows, cols)
  assert empty.shape == (0, 4, 4)
  nearest = coco_records_source._nearest  # pylint: disable=protected-access
  for source, target in ((640, 256), (427, 171), (100, 300)):
    np.testing.assert_array_equal(nearest(source, target).numpy(),
                                  coco.nearest_indices(source, target))


@pytest.fixture(scope='module')
def coco128_records(tmp_path_factory):
  root = shared_data_path('coco128')
  out = str(tmp_path_factory.mktemp('coco128_records'))
  coco_records.convert(root, 'train', out, num_shards=3)  # 100 images: uneven shards
  return root, out


def test_coco128_features_equal_coco_json(coco128_records):
  # JPEGs of ~640 x 480 downscaled to fit 256: PIL rounds after each of its two passes,
  # TF once. Measured: at most 1 grey level anywhere, 0.087 on average.
  root, out = coco128_records
  want, source, got = _both(root, out, 'train', image_size=(256, 256), max_instances=64)
  assert source.num_examples == 100 and len(got) == 100
  assert source.metadata['annotation_file'].endswith('instances_train2017.json')
  _assert_same(want, got, image_tolerance=1)
  mean = np.mean([np.abs(g['image'].astype(int) - w['image'].astype(int)).mean()
                  for w, g in zip(want, got)])
  assert mean < 0.1


@pytest.mark.slow  # 48 s at load 9 (COCOeval of both sources)
def test_coco128_resize_ceiling_equals_coco_json(coco128_records):
  # The evaluator's path: COCOeval of the source's own targets against the original
  # annotation JSON (metadata['annotation_file'], category ids): the same numbers.
  from tasks.instance import evaluation  # pylint: disable=g-import-not-at-top
  root, out = coco128_records
  config = {'image_size': (128, 128), 'max_instances': 100}
  want = evaluation.resize_ceiling(build_source({'source': 'coco_json', 'data_dir': root,
                                                 **config}, 'train'))
  got = evaluation.resize_ceiling(build_source({'source': 'coco_records', 'data_dir': out,
                                                **config}, 'train'))
  assert got == want and want['bbox']['AP'] > 0.9
