"""Segmentation run setup and predictions: class weights from a config string, the
ignore-id check, and predicted masks fed through the task's normalisation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from data.sources import Source
from tasks.segmentation import analysis
from tasks.segmentation import task as segmentation
from train.state import create_train_state


def _source(masks, class_names):
  masks = np.asarray(masks, np.int32)
  images = np.zeros(masks.shape + (1,), np.uint8)
  dataset = tf.data.Dataset.from_tensor_slices({'image': images, 'mask': masks})
  return Source(dataset, len(masks), tuple(class_names), images.shape[1:])


def test_class_weights_from_the_config_string():
  source = _source([[[0, 0, 0, 1], [1, 2, 255, 0]], [[0, 0, 1, 255], [0, 2, 2, 1]]],
                   ('a', 'b', 'c'))
  assert analysis.class_weights('', source) is None
  assert analysis.class_weights('1, 2.5,3', source) == (1.0, 2.5, 3.0)
  masks = np.stack([m['mask'] for m in source.dataset.as_numpy_iterator()])
  np.testing.assert_array_equal(analysis.class_weights('median_frequency', source),
                                segmentation.median_frequency_weights(masks, 3))
  # 7 x a, 4 x b, 3 x c: median frequency 4/14, so b weighs 1.
  np.testing.assert_allclose(analysis.class_weights('median_frequency', source),
                             (4 / 7, 1.0, 4 / 3))
  with pytest.raises(ValueError, match=r"class_weights='1,2': 2 weights for 3 classes"):
    analysis.class_weights('1,2', source)


def test_an_ignore_id_that_is_a_class_is_refused():
  names = ('Sky',) + ('a',) * 10
  analysis.check_ignore_id(11, 'flip_lr', names)  # void 11 is no class: fine
  with pytest.raises(ValueError, match=r"config.ignore_id=0 is the class id of 'Sky'"):
    analysis.check_ignore_id(0, 'flip_lr', names)
  analysis.check_ignore_id(0, '', names)  # nothing is filled without augmentation


class _Threshold(nn.Module):
  """Logits (x, -x) of the first channel: class 0 where the model input is positive."""

  @nn.compact
  def __call__(self, x, train=False):
    scale = self.param('scale', nn.initializers.ones, ())
    return jnp.concatenate([x[..., :1], -x[..., :1]], -1) * scale


def test_predicted_masks_see_the_images_as_the_task_normalises_them():
  state = create_train_state(_Threshold(), optax.sgd(0.1), (1, 2, 3, 1), jax.random.key(0))
  images = np.array([[[10, 120, 140]] * 2, [[250, 0, 129]] * 2], np.uint8)[..., None]
  task = segmentation.segmentation_task(('dark', 'light'), mean=0.5, std=0.25)
  masks = analysis.predict_masks(state, images, batch_size=3, inputs_fn=task.inputs_fn)
  assert masks.dtype == np.int32 and masks.shape == (2, 2, 3)
  # (x / 255 - 0.5) / 0.25 > 0 for x >= 128: class 0.
  np.testing.assert_array_equal(masks, (images[..., 0] < 128).astype(np.int32))
