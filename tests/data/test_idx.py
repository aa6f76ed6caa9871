import gzip
import os

import numpy as np
import pytest

from data import idx


def _write_split(directory, images, labels, split='train'):
  images_stem, labels_stem = idx.SPLIT_FILES[split]
  idx.write_idx(os.path.join(directory, images_stem + '.gz'), images)
  idx.write_idx(os.path.join(directory, labels_stem + '.gz'), labels)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_round_trip(tmp_path, rng):
  images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 7, dtype=np.uint8)
  _write_split(tmp_path, images, labels)
  got_images, got_labels = idx.load_split(str(tmp_path), 'train')
  np.testing.assert_array_equal(got_images[..., 0], images)
  np.testing.assert_array_equal(got_labels, labels)
  assert got_images.shape == (7, 28, 28, 1) and got_labels.dtype == np.int32


def test_uncompressed_files_are_read_too(tmp_path, rng):
  images = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
  idx.write_idx(str(tmp_path / 't10k-images-idx3-ubyte'), images)
  idx.write_idx(str(tmp_path / 't10k-labels-idx1-ubyte'), np.arange(3, dtype=np.uint8))
  got, _ = idx.load_split(str(tmp_path), 'test')
  np.testing.assert_array_equal(got[..., 0], images)


def test_missing_directory_says_how_to_provide_data(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist.*tfds source'):
    idx.load_split(str(tmp_path / 'nope'), 'train')


def test_missing_file_is_named(tmp_path, rng):
  idx.write_idx(str(tmp_path / 'train-images-idx3-ubyte.gz'),
                rng.integers(0, 256, (2, 28, 28), dtype=np.uint8))
  with pytest.raises(FileNotFoundError, match='train-labels-idx1-ubyte.gz'):
    idx.load_split(str(tmp_path), 'train')


def test_truncated_data_is_reported_with_expected_size(tmp_path, rng):
  path = str(tmp_path / 'x.gz')
  idx.write_idx(path, rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
  with gzip.open(path) as f:
    raw = f.read()
  with gzip.open(path, 'wb') as f:
    f.write(raw[:-100])
  with pytest.raises(idx.IdxFormatError, match=r'x.gz: 3052 bytes, expected 3152 for shape \[4, 28, 28\]'):
    idx.read_idx(path, idx.IMAGES_MAGIC)


def test_truncated_gzip_stream_is_reported(tmp_path, rng):
  path = str(tmp_path / 'x.gz')
  idx.write_idx(path, rng.integers(0, 256, (50, 28, 28), dtype=np.uint8))
  raw = open(path, 'rb').read()
  open(path, 'wb').write(raw[: len(raw) // 2])
  with pytest.raises(idx.IdxFormatError, match='x.gz: cannot be read.*truncated'):
    idx.read_idx(path, idx.IMAGES_MAGIC)


def test_wrong_magic_is_reported(tmp_path, rng):
  # A labels file where images are expected.
  path = str(tmp_path / 'train-images-idx3-ubyte.gz')
  idx.write_idx(path, rng.integers(0, 10, 5, dtype=np.uint8))
  with pytest.raises(idx.IdxFormatError, match='magic number 0x00000801, expected 0x00000803'):
    idx.read_idx(path, idx.IMAGES_MAGIC)


def test_count_mismatch_names_both_files(tmp_path, rng):
  _write_split(tmp_path, rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
               rng.integers(0, 10, 4, dtype=np.uint8))
  with pytest.raises(idx.IdxFormatError, match='holds 5 images but .*holds 4 labels'):
    idx.load_split(str(tmp_path), 'train')


def test_fashion_mnist_source_rejects_wrong_image_size(tmp_path, rng):
  from data.sources import build_source
  _write_split(tmp_path, rng.integers(0, 256, (3, 32, 32), dtype=np.uint8),
               rng.integers(0, 10, 3, dtype=np.uint8))
  with pytest.raises(idx.IdxFormatError, match=r'shape \(32, 32, 1\), expected \(28, 28, 1\)'):
    build_source({'source': 'fashion_mnist_idx', 'data_dir': str(tmp_path)}, 'train')


def test_fashion_mnist_source_rejects_out_of_range_labels(tmp_path, rng):
  from data.sources import build_source
  _write_split(tmp_path, rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
               np.array([0, 3, 12], np.uint8))
  with pytest.raises(idx.IdxFormatError,
                     match=r'train-labels-idx1-ubyte.gz: example 2 has label 12, expected \[0, 9\]'):
    build_source({'source': 'fashion_mnist_idx', 'data_dir': str(tmp_path)}, 'train')
