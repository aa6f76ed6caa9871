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


def mock_pets(num_examples):
  """TFDS mock data of `num_examples` pets of different sizes, trimaps 1..3, honouring
  SkipDecoding (TFDS's random mock cannot encode its random `head_bbox`)."""
  rng = np.random.default_rng(0)
  examples = [{'image': rng.integers(0, 256, (30 + i, 40 - i, 3), dtype=np.uint8),
               'segmentation_mask': rng.integers(1, 4, (30 + i, 40 - i, 1), dtype=np.uint8)}
              for i in range(num_examples)]

  def as_dataset(self, split, decoders=None, **kwargs):
    del self, split, kwargs
    encoded = [{k: tf.io.encode_png(v).numpy() if k in (decoders or {}) else v
                for k, v in e.items()} for e in examples]
    return tf.data.Dataset.from_generator(
        lambda: iter(encoded), output_signature=tf.nest.map_structure(
            lambda x: tf.TensorSpec((None,) * np.ndim(x), tf.as_dtype(np.asarray(x).dtype)),
            encoded[0])).apply(tf.data.experimental.assert_cardinality(num_examples))
  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


@pytest.mark.parametrize('target', ['semantic', 'binary'])
def test_source_on_mock_data(target):
  with mock_pets(3):
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
