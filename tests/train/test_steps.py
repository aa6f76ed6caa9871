import functools

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.cnn import CNN
from models.mlp import MLP
from train import steps
from tasks.classification.task import cross_entropy_loss, eval_sums
from train.state import create_train_state


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, 28, 28, 1)).astype(np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def _state(model, lr=1e-3):
  return create_train_state(model, optax.adam(lr), (1, 28, 28, 1), jax.random.PRNGKey(0))


@pytest.mark.parametrize('model', [MLP(hidden_widths=(64,)), CNN(widths=(8, 16), dense_width=32)])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(model):
  state, batch = _state(model), _batch()
  step = jax.jit(functools.partial(steps.train_step, loss_fn=cross_entropy_loss))
  losses = []
  for _ in range(15):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 15


def test_batch_norm_statistics_are_updated_and_carried():
  state = _state(CNN(widths=(8,), dense_width=16))
  before = state.model_state['batch_stats']['BatchNorm_0']['mean']
  state, _ = steps.train_step(state, _batch(), loss_fn=cross_entropy_loss)
  after = state.model_state['batch_stats']['BatchNorm_0']['mean']
  assert not np.allclose(before, after)


def test_eval_sums_count_only_valid_examples():
  state = _state(MLP(hidden_widths=(16,)))
  batch = _batch(8)
  batch['valid'] = np.array([True] * 5 + [False] * 3)
  sums = steps.eval_step(state, batch, sums_fn=eval_sums)
  assert float(sums['count']) == 5
  logits = steps.predict_step(state, batch)
  expected = optax.softmax_cross_entropy_with_integer_labels(logits[:5], batch['label'][:5]).sum()
  np.testing.assert_allclose(sums['loss'], expected, rtol=1e-6)


def test_pmap_step_matches_jit_step_on_the_same_global_batch():
  """2 devices x 8 examples under pmap == 1 device x 16 under jit (BatchNorm included)."""
  devices = jax.local_devices()[:2]
  assert len(devices) == 2, 'conftest sets --xla_force_host_platform_device_count'
  batch = _batch(16)
  # No dropout: per-device dropout keys differ by design, which is not what is compared.
  jit_model = CNN(widths=(8, 16), dense_width=32, dropout_rate=0.0)
  pmap_model = CNN(widths=(8, 16), dense_width=32, dropout_rate=0.0, bn_axis_name='batch')
  jit_state, pmap_state = _state(jit_model, 1e-2), _state(pmap_model, 1e-2)
  chex.assert_trees_all_equal(jit_state.params, pmap_state.params)

  jit_step = jax.jit(functools.partial(steps.train_step, loss_fn=cross_entropy_loss))
  pmap_step = jax.pmap(functools.partial(steps.train_step, loss_fn=cross_entropy_loss,
                                         axis_name='batch'), axis_name='batch', devices=devices)
  pmap_state = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), pmap_state)
  sharded = jax.tree_util.tree_map(lambda x: x.reshape((2, 8) + x.shape[1:]), batch)
  for _ in range(3):
    jit_state, jit_metrics = jit_step(jit_state, batch)
    pmap_state, pmap_metrics = pmap_step(pmap_state, sharded)
  unreplicated = jax.tree_util.tree_map(lambda x: x[0], pmap_state)
  # float32 sums in a different order: equal to ~1e-6 relative, not bitwise.
  chex.assert_trees_all_close(unreplicated.params, jit_state.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(unreplicated.model_state, dict(jit_state.model_state),
                              rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(pmap_metrics['loss'][0], jit_metrics['loss'], rtol=1e-5)


def test_dropout_key_depends_on_step_so_replays_are_identical():
  state = _state(MLP(hidden_widths=(32,), dropout_rate=0.5))
  batch = _batch()
  a, _ = steps.train_step(state, batch, loss_fn=cross_entropy_loss)
  b, _ = steps.train_step(state, batch, loss_fn=cross_entropy_loss)
  chex.assert_trees_all_equal(a.params, b.params)
  assert jnp.all(jnp.isfinite(jax.flatten_util.ravel_pytree(a.params)[0]))


def test_normalized_image_inputs_are_the_float32_arithmetic_to_the_last_bit():
  # NumPy's float32 division is IEEE, as TensorFlow's (the tf.data normalisation every
  # seeded result before the restructure used); XLA's own `x / 255` would differ.
  images = np.random.default_rng(0).integers(0, 256, (4, 5, 5, 3)).astype(np.uint8)
  images[0, 0, :3, 0] = [0, 128, 255]
  mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
  (got,) = jax.jit(steps.normalized_image_inputs(mean, std))({'image': images})
  expected = ((images.astype(np.float32) / np.float32(255.0) - np.float32(mean))
              / np.float32(std))
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(got), expected)
  (grey,) = jax.jit(steps.normalized_image_inputs(0.3, 0.3))({'image': images[..., :1]})
  np.testing.assert_array_equal(
      np.asarray(grey), (images[..., :1].astype(np.float32) / np.float32(255.0)
                         - np.float32(0.3)) / np.float32(0.3))
  with pytest.raises(TypeError, match=r"batch\['image'\] is float32 \[4, 5, 5, 3\]; expected uint8"):
    steps.normalized_image_inputs(mean, std)({'image': images.astype(np.float32)})
