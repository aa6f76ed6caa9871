"""The classification evaluators on a model whose predictions are known: a class per
half of the image (left / right), read from uint8 images through the task's inputs_fn."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from data.sources import Source
from tasks.classification import evaluators
from tasks.classification.task import classification_task
from tests.tasks.classification.test_analysis import column_images
from train.evaluators import EvalContext, build_evaluators
from train.state import create_train_state


class _HalfSums(nn.Module):
  """Logits [B, 2]: the sums of the left and right half of the image (`swap`: right,
  left). Its one parameter is a zero added to the logits, so the state has params."""
  swap: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    zero = self.param('zero', nn.initializers.zeros, ())
    half = x.shape[2] // 2
    logits = jnp.stack([x[:, :, :half].sum((1, 2, 3)), x[:, :, half:].sum((1, 2, 3))], -1)
    return (logits[:, ::-1] if self.swap else logits) + zero


def _context(images, labels, num_classes=2):
  dataset = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
  source = Source(dataset, len(images), [f'c{k}' for k in range(num_classes)],
                  images.shape[1:])
  # Normalising with mean 0, std 1: a uint8 image is required and 255 becomes 1.0.
  return EvalContext(eval_source=source, batch_size=3,
                     task=classification_task(mean=0.0, std=1.0), workdir='')


def _state(model=None):
  return create_train_state(model or _HalfSums(), optax.sgd(0.1), (1, 8, 8, 1),
                            jax.random.PRNGKey(0))


def test_shift_robustness_matches_the_hand_computed_accuracies():
  # column_images: class 0 lit at column 3, class 1 at column 4 (see test_analysis).
  images, labels = column_images()
  evaluate = build_evaluators({'shift': {'type': 'shift_robustness', 'shifts': (0, 1, 4)}},
                              _context(images, labels))['shift']
  results = evaluate(_state())
  assert results == {'accuracy_0px': 1.0, 'accuracy_1px': 0.75, 'accuracy_4px': 0.5}
  history_entry = {f'shift/{k}': v for k, v in results.items()}
  assert evaluators.shift_accuracies(history_entry, 'shift', (0, 1, 4)) == {
      0: 1.0, 1: 0.75, 4: 0.5}


def _five_examples():
  """Lit at columns 0, 6, 1, 7, 5 -> predictions 0, 1, 0, 1, 1; labels 0, 1, 1, 0, 2."""
  images = np.zeros((5, 8, 8, 1), np.uint8)
  for i, column in enumerate([0, 6, 1, 7, 5]):
    images[i, 4, column, 0] = 200
  return images, np.array([0, 1, 1, 0, 2])


def test_confusion_matrix_per_class_accuracy_and_misclassified():
  images, labels = _five_examples()
  evaluate = evaluators.confusion(_context(images, labels, num_classes=3))
  results = evaluate(_state())
  np.testing.assert_array_equal(results['matrix'], [[1, 1, 0], [1, 1, 0], [0, 1, 0]])
  np.testing.assert_allclose(results['per_class_accuracy'], [0.5, 0.5, 0.0])
  assert results['misclassified'] == [[2, 1, 0], [3, 0, 1], [4, 2, 1]]
  every_other = evaluators.confusion(_context(images, labels, num_classes=3),
                                     misclassified=1, misclassified_stride=2)
  assert every_other(_state())['misclassified'] == [[2, 1, 0]]


def test_accuracy_of_the_model_with_changed_fields():
  images, _ = _five_examples()  # predictions 0, 1, 0, 1, 1
  context = _context(images, np.array([0, 1, 0, 1, 0]))
  state = _state()
  assert evaluators.accuracy(context)(state) == {'accuracy': 0.8}
  # Swapped logits: predictions 1, 0, 1, 0, 0 -> right on the last example only.
  swapped = evaluators.accuracy(context, model_fields={'swap': True})
  assert swapped(state) == {'accuracy': 0.2}
  assert swapped(state) == {'accuracy': 0.2}  # the clone is reused
  assert evaluators.accuracy(context)(state) == {'accuracy': 0.8}  # state left alone


def test_unknown_model_field_is_an_error():
  images, labels = _five_examples()
  evaluate = evaluators.accuracy(_context(images, labels, num_classes=3),
                                 model_fields={'no_such_field': 1})
  with pytest.raises(TypeError, match='no_such_field'):
    evaluate(_state())
