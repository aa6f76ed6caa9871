"""CIFAR-10 sources: the official binary format, TFDS (mock data) and image folders."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data import cifar10, image_folder
from data.sources import build_source

SHARED_CIFAR = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data',
                            'cifar10_jpeg')


def _random_split(rng, n):
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, n).astype(np.int32)
  return images, labels


def _write_release(directory, rng, per_file=3):
  """The six official files with `per_file` records each; returns what was written."""
  written = {'train': [], 'test': []}
  os.makedirs(directory, exist_ok=True)
  for split, names in cifar10.SPLIT_FILES.items():
    for name in names:
      images, labels = _random_split(rng, per_file)
      cifar10.write_batch_file(os.path.join(directory, name), images, labels)
      written[split].append((images, labels))
  return {split: (np.concatenate([i for i, _ in parts]), np.concatenate([l for _, l in parts]))
          for split, parts in written.items()}


def test_record_layout_is_label_then_planar_rgb(tmp_path):
  # Built by hand, not with write_batch_file, so a writer/reader pair sharing one
  # wrong layout cannot pass.
  planes = np.zeros((3, 32, 32), np.uint8)
  planes[0, 1, 2], planes[1, 1, 2], planes[2, 1, 2] = 11, 22, 33  # pixel at row 1, col 2
  planes[0, 31, 0] = 7
  record = bytes([9]) + planes.tobytes()
  path = tmp_path / 'one.bin'
  path.write_bytes(record * 2)
  images, labels = cifar10.read_batch_file(str(path))
  assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, [9, 9])
  np.testing.assert_array_equal(images[0, 1, 2], [11, 22, 33])
  assert images[0, 31, 0, 0] == 7 and images[0, 0, 31, 0] == 0


def test_binary_round_trip_and_source(tmp_path):
  directory = tmp_path / cifar10.BIN_FOLDER
  written = _write_release(str(directory), np.random.default_rng(0))
  for split in ('train', 'test'):
    images, labels = cifar10.load_binary_split(str(directory), split)
    np.testing.assert_array_equal(images, written[split][0])
    np.testing.assert_array_equal(labels, written[split][1])
  # The parent of cifar-10-batches-bin works too (where the tarball extracts to).
  source = build_source({'source': 'cifar10_bin', 'data_dir': str(tmp_path)}, 'train')
  assert source.num_examples == 15 and tuple(source.class_names) == cifar10.CLASS_NAMES
  examples = list(source.dataset.as_numpy_iterator())
  np.testing.assert_array_equal(np.stack([e['image'] for e in examples]), written['train'][0])
  assert examples[0]['label'].dtype == np.int32


def test_truncated_record_is_an_error_naming_the_file(tmp_path):
  images, labels = _random_split(np.random.default_rng(1), 2)
  path = str(tmp_path / 'data_batch_1.bin')
  cifar10.write_batch_file(path, images, labels)
  with open(path, 'r+b') as f:
    f.truncate(2 * cifar10.RECORD_BYTES - 5)
  with pytest.raises(cifar10.Cifar10FormatError, match=r'data_batch_1\.bin.*3073-byte'):
    cifar10.read_batch_file(path)


def test_label_out_of_range_is_an_error(tmp_path):
  path = tmp_path / 'test_batch.bin'
  path.write_bytes(bytes([10]) + bytes(3072))
  with pytest.raises(cifar10.Cifar10FormatError, match='label 10'):
    cifar10.read_batch_file(str(path))


def test_missing_files_say_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match='cifar-10-binary'):
    cifar10.load_binary_split(str(tmp_path), 'test')


def test_tfds_source_under_mock_data():
  with tfds.testing.mock_data(num_examples=6):
    source = build_source({'source': 'cifar10_tfds'}, 'train')
    examples = list(source.dataset.as_numpy_iterator())
  assert source.num_examples == len(examples) == 6
  example = examples[0]
  assert tuple(source.class_names) == cifar10.CLASS_NAMES
  assert source.image_shape == (32, 32, 3)
  assert example['image'].shape == (32, 32, 3) and example['image'].dtype == np.uint8
  assert example['label'].dtype == np.int32 and 0 <= example['label'] < 10


def _write_folder(root, rng):
  """PNG (lossless) images in class folders created out of order; returns pixels by path."""
  pixels = {}
  for name in ('truck', 'airplane', 'cat'):
    os.makedirs(os.path.join(root, 'train', name))
    for stem in ('b', 'a'):
      image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
      path = os.path.join(root, 'train', name, f'{stem}.png')
      tf.io.write_file(path, tf.io.encode_png(image))
      pixels[(name, stem)] = image
  return pixels


def test_image_folder_is_sorted_decoded_and_cached(tmp_path):
  pixels = _write_folder(str(tmp_path), np.random.default_rng(2))
  source = build_source({'source': 'image_folder', 'data_dir': str(tmp_path),
                         'image_shape': (32, 32, 3)}, 'train')
  assert tuple(source.class_names) == ('airplane', 'cat', 'truck')  # sorted folders
  examples = list(source.dataset.as_numpy_iterator())
  order = [(n, s) for n in ('airplane', 'cat', 'truck') for s in ('a', 'b')]
  for example, (name, stem) in zip(examples, order):
    np.testing.assert_array_equal(example['image'], pixels[(name, stem)])
    assert source.class_names[example['label']] == name
  # Two passes give the same examples (the second from the cache).
  again = list(source.dataset.as_numpy_iterator())
  np.testing.assert_array_equal(examples[3]['image'], again[3]['image'])


def test_a_split_lacking_a_class_keeps_the_labels_of_the_others(tmp_path):
  _write_folder(str(tmp_path), np.random.default_rng(4))
  image = np.zeros((32, 32, 3), np.uint8)
  for name in ('airplane', 'truck'):  # the test split has no 'cat'
    tf.io.write_file(os.path.join(tmp_path, 'test', name, 'x.png'), tf.io.encode_png(image))
  config = {'source': 'image_folder', 'data_dir': str(tmp_path), 'image_shape': (32, 32, 3)}
  train, test = build_source(config, 'train'), build_source(config, 'test')
  assert tuple(test.class_names) == tuple(train.class_names) == ('airplane', 'cat', 'truck')
  labels = [int(e['label']) for e in test.dataset.as_numpy_iterator()]
  assert labels == [0, 2]  # 'truck' is 2 in both splits (it was 1 in the test split)


def test_image_folder_wrong_classes_and_shape(tmp_path):
  _write_folder(str(tmp_path), np.random.default_rng(3))
  with pytest.raises(image_folder.ImageFolderError, match='expected exactly'):
    build_source({'source': 'cifar10_folder', 'data_dir': str(tmp_path)}, 'train')
  source = build_source({'source': 'image_folder', 'data_dir': str(tmp_path),
                         'image_shape': (28, 28, 3)}, 'train')
  expected = r'\[28, 28, 3\][\s\S]*airplane.a\.png'  # the shape and the file
  with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
    next(source.dataset.as_numpy_iterator())


@pytest.mark.skipif(not os.path.isdir(SHARED_CIFAR),
                    reason=f'the JPEG copy of CIFAR-10 is not at {SHARED_CIFAR}')
def test_shared_jpeg_copy_in_official_order():
  source = build_source({'source': 'cifar10_folder', 'data_dir': SHARED_CIFAR}, 'test')
  assert source.num_examples == 10_000
  batch = next(source.dataset.batch(1001).as_numpy_iterator())
  assert batch['image'].shape == (1001, 32, 32, 3) and batch['image'].dtype == np.uint8
  # 1,000 airplanes (label 0) first, then automobiles (label 1).
  np.testing.assert_array_equal(batch['label'][:1000], 0)
  assert batch['label'][1000] == 1
