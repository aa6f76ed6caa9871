"""The data order contract of lazy decoding, per source family.

Decoding after the shuffle, shard and skip (`train_batches(source.records,
decode_fn=source.decode)`) must give bit-identical batches to decoding first
(`train_batches(source.dataset)`, the order every experiment was trained in), with
the same per-example augmentation seeds, for every shard and resume point.
"""
import os

import chex
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data import pipeline, shapes
from data.sources import build_source
from tests.conftest import shared_data_path
from tests.data.test_oxford_pet import mock_pets

# (skip_batches, shuffle_buffer, num_shards): a resume, a small buffer, two hosts.
CASES = ((0, None, 1), (1, 5, 1), (1, None, 2))


def _seeded(features, seed):
  return {**features, 'seed': seed}


def assert_lazy_equals_eager(source, batch_size, epoch=1):
  assert source.decode is not None, 'this source decodes nothing lazily'
  assert int(source.records.cardinality()) == source.num_examples
  for skip, buffer, num_shards in CASES:
    for shard_index in range(num_shards):
      kwargs = dict(batch_size=batch_size, seed=3, epoch=epoch, augment_fn=_seeded,
                    skip_batches=skip, shuffle_buffer=buffer, num_shards=num_shards,
                    shard_index=shard_index)
      eager = list(pipeline.as_numpy(pipeline.train_batches(source.dataset, **kwargs)))
      lazy = list(pipeline.as_numpy(pipeline.train_batches(
          source.records, decode_fn=source.decode, **kwargs)))
      assert len(lazy) == len(eager) == source.num_examples // batch_size - skip
      chex.assert_trees_all_equal(lazy, eager)


def test_coco_json(tmp_path):
  shapes.write_coco(str(tmp_path), 13, seed=4)
  source = build_source({'source': 'coco_json', 'data_dir': str(tmp_path),
                         'image_size': (40, 48), 'max_instances': 6}, 'train')
  assert source.records.element_spec == {'index': tf.TensorSpec((), tf.int64)}
  assert_lazy_equals_eager(source, batch_size=4)


@pytest.mark.filterwarnings('ignore:.*more than max_instances')
def test_coco128():
  source = build_source({'source': 'coco_json', 'data_dir': shared_data_path('coco128'),
                         'image_size': (64, 64), 'max_instances': 20}, 'train')
  assert_lazy_equals_eager(source, batch_size=16)


def test_instance_labels_nuclei():
  source = build_source({'source': 'instance_labels', 'image_size': (64, 64),
                         'data_dir': shared_data_path('nuclei_dsb2018')}, 'val')
  assert_lazy_equals_eager(source, batch_size=8)


def test_camvid():
  source = build_source({'source': 'camvid', 'data_dir': shared_data_path('camvid_240x180')},
                        'val')
  assert source.records.element_spec == {'image': tf.TensorSpec((), tf.string),
                                         'mask': tf.TensorSpec((), tf.string)}
  assert_lazy_equals_eager(source, batch_size=8)


def test_isbi_membrane():
  source = build_source({'source': 'isbi_membrane',
                         'data_dir': shared_data_path('isbi_membrane')}, 'train')
  assert_lazy_equals_eager(source, batch_size=4)


@pytest.mark.parametrize('source_name', ['image_folder', 'cifar10_folder'])
def test_image_folder_without_cache(tmp_path, source_name):
  rng = np.random.default_rng(0)
  for name in ('airplane', 'cat', 'truck') if source_name == 'image_folder' else (
      'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
      'truck'):
    os.makedirs(tmp_path / 'train' / name)
    for stem in range(4):
      image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
      tf.io.write_file(str(tmp_path / 'train' / name / f'{stem}.jpg'),
                       tf.io.encode_jpeg(image))
  config = {'source': source_name, 'data_dir': str(tmp_path), 'image_shape': (32, 32, 3)}
  lazy = build_source({**config, 'cache': False}, 'train')
  assert_lazy_equals_eager(lazy, batch_size=4)
  # cache=True keeps the decoded examples as records: the same batches again.
  cached = build_source(config, 'train')
  assert cached.decode is None
  kwargs = dict(batch_size=4, seed=3, epoch=1, skip_batches=1, num_shards=2, shard_index=1)
  chex.assert_trees_all_equal(
      list(pipeline.as_numpy(pipeline.train_batches(cached.records, **kwargs))),
      list(pipeline.as_numpy(pipeline.train_batches(lazy.records, decode_fn=lazy.decode,
                                                    **kwargs))))


def test_oxford_pet_keeps_images_encoded_until_decoded():
  with mock_pets(8):
    source = build_source({'source': 'oxford_pet', 'image_size': (20, 24)}, 'train')
    assert source.records.element_spec == {'image': tf.TensorSpec((), tf.string),
                                           'segmentation_mask': tf.TensorSpec((), tf.string)}
    assert_lazy_equals_eager(source, batch_size=2)


def test_cifar10_tfds_keeps_images_encoded_until_decoded():
  # Mock data only shows that both paths agree; that the decoded values are TFDS's own
  # rests on `decode` calling the feature's decode_example, as TFDS's decoding does.
  with tfds.testing.mock_data(num_examples=8):
    source = build_source({'source': 'cifar10_tfds'}, 'train')
    assert source.records.element_spec['image'] == tf.TensorSpec((), tf.string)
    assert_lazy_equals_eager(source, batch_size=2)
