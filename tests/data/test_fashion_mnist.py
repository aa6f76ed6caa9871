"""Both Fashion-MNIST sources on the official files in ../shared/data/fashion_mnist."""
import numpy as np

from data.fashion_mnist import CLASS_NAMES
from data.sources import build_source
from tests.conftest import shared_data_path


def _first(source, n):
  return next(source.dataset.batch(n).as_numpy_iterator())


def test_idx_source_reads_the_official_release():
  data_dir = shared_data_path('fashion_mnist')
  train = build_source({'source': 'fashion_mnist_idx', 'data_dir': data_dir}, 'train')
  test = build_source({'source': 'fashion_mnist_idx', 'data_dir': data_dir}, 'test')
  assert (train.num_examples, test.num_examples) == (60_000, 10_000)
  assert train.class_names == CLASS_NAMES and train.image_shape == (28, 28, 1)
  labels = _first(test, 10_000)['label']
  np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
  # The first training example of the official release is an ankle boot (label 9).
  assert _first(train, 1)['label'][0] == 9


def test_tfds_prepares_offline_from_manual_dir_and_matches_idx(tmp_path):
  data_dir = shared_data_path('fashion_mnist')
  config = {'source': 'fashion_mnist_tfds', 'tfds_data_dir': str(tmp_path),
            'manual_dir': data_dir}
  tfds_test = build_source(config, 'test')
  idx_test = build_source({'source': 'fashion_mnist_idx', 'data_dir': data_dir}, 'test')
  assert tfds_test.num_examples == 10_000
  a, b = _first(tfds_test, 10_000), _first(idx_test, 10_000)
  # TFDS shuffles examples into its own order: compare as sets of (image, label).
  def keyed(batch):
    return sorted(zip((img.tobytes() for img in batch['image']), batch['label'].tolist()))
  assert keyed(a) == keyed(b)
