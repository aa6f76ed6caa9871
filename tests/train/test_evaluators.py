"""The loop's exact evaluator (`sums_evaluator`): the evaluation set is read through
tf.data once and its batches kept when small, with the same results every time."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from data import pipeline
from data.sources import Source
from tasks.classification.task import classification_task
from train import evaluators
from train.state import create_train_state


class _Mean(nn.Module):
  """Logits [B, 2]: (mean pixel, scale); `scale` is the one parameter, so the loss
  changes when the parameters do."""

  @nn.compact
  def __call__(self, x, train=False):
    scale = self.param('scale', nn.initializers.ones, ())
    mean = x.mean((1, 2, 3))
    return jnp.stack([mean * scale, 0.5 * jnp.ones_like(mean)], -1)


def _evaluator(num_examples=7):  # batches of 4 (a multiple of the test devices)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num_examples, 4, 4, 1), dtype=np.uint8)
  labels = rng.integers(0, 2, num_examples).astype(np.int64)
  source = Source(tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels}),
                  num_examples, ['a', 'b'], (4, 4, 1))
  context = evaluators.EvalContext(eval_source=source, batch_size=4, workdir='',
                                   task=classification_task(mean=0.0, std=1.0))  # image / 255
  return evaluators.sums_evaluator(context), images, labels


def _state(scale):
  state = create_train_state(_Mean(), optax.sgd(0.1), (1, 4, 4, 1), jax.random.PRNGKey(0))
  return state.replace(params={'scale': jnp.float32(scale)})


@pytest.fixture
def pipeline_reads(monkeypatch):
  reads = []
  original = pipeline.eval_batches

  def counted(*args, **kwargs):
    reads.append(1)
    return original(*args, **kwargs)
  monkeypatch.setattr(pipeline, 'eval_batches', counted)
  return reads


def _expected(images, labels, scale):
  logits = np.stack([images.mean((1, 2, 3)) / 255.0 * scale,
                     np.full(len(images), 0.5)], -1)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return (-log_p[np.arange(len(labels)), labels].mean(),
          (logits.argmax(-1) == labels).mean())


def test_small_set_is_read_once_and_every_evaluation_is_exact(pipeline_reads):
  evaluate, images, labels = _evaluator()
  for scale in (1.0, 3.0, 1.0):  # different parameters: the kept batches, new results
    results = evaluate(_state(scale))
    loss, accuracy = _expected(images, labels, scale)
    assert results['count'] == 7  # the padded rows of the last batch are not counted
    np.testing.assert_allclose(results['loss'], loss, rtol=1e-5)
    np.testing.assert_allclose(results['accuracy'], accuracy)
  assert len(pipeline_reads) == 1


def test_a_set_over_the_budget_is_read_every_time(pipeline_reads, monkeypatch):
  monkeypatch.setattr(evaluators, 'KEEP_BATCHES_BYTES', 100)  # under one batch
  evaluate, _, _ = _evaluator()
  first = evaluate(_state(2.0))
  assert evaluate(_state(2.0)) == first
  assert len(pipeline_reads) == 2
