"""Oxford-IIIT Pet through TFDS, on `tfds.testing.mock_data` (no download)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data import oxford_pet
from data.sources import build_source


def test_trimap_mapping_semantic_and_binary():
  trimap = tf.constant([[1, 2, 3, 9]], tf.uint8)
  semantic = oxford_pet.map_trimap(trimap, oxford_pet.trimap_table('semantic', 'ignore', 255),
                                   255)
  np.testing.assert_array_equal(semantic, [[1, 0, 2, 255]])
  for border, expected in (('ignore', 255), ('foreground', 1), ('background', 0)):
    table = oxford_pet.trimap_table('binary', border, 255)
    np.testing.assert_array_equal(oxford_pet.map_trimap(trimap, table, 255),
                                  [[1, 0, expected, 255]])
  with pytest.raises(ValueError, match='border'):
    oxford_pet.trimap_table('binary', 'edge', 255)


@pytest.mark.parametrize('target', ['semantic', 'binary'])
def test_source_on_mock_data(target):
  with tfds.testing.mock_data(num_examples=3):
    source = build_source({'source': 'oxford_pet', 'image_size': (20, 24), 'target': target},
                          'train')
    examples = list(source.dataset.as_numpy_iterator())
  assert source.num_examples == 3 and len(examples) == 3
  assert source.image_shape == (20, 24, 3)
  assert len(source.class_names) == (3 if target == 'semantic' else 2)
  for e in examples:
    assert e['image'].shape == (20, 24, 3) and e['image'].dtype == np.uint8
    assert e['mask'].shape == (20, 24) and e['mask'].dtype == np.int32
    assert set(np.unique(e['mask'])) <= set(range(len(source.class_names))) | {255}
