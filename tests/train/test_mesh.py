"""Data parallelism over a mesh: jit-over-mesh == pmap == one device; device-count errors;
checkpoints saved on 4 devices resume on 2; bf16 compute; bad labels."""
import functools
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from models.cnn import CNN
from models.mlp import MLP
from train import mesh as mesh_lib
from train import steps
from tasks.classification.task import classification_task, cross_entropy_loss
from train.loop import _with_compute_dtype, train_and_evaluate
from train.state import create_train_state
from tests.toy_data import band_source

# float32 sums over 4 shards vs. one: the same maths in a different order, so equal
# to ~1e-6 relative per step; after a few Adam steps 1e-4 / 1e-5 holds with margin.
RTOL, ATOL = 1e-4, 1e-5


def _devices(n):
  devices = jax.devices()[:n]
  assert len(devices) == n, 'tests/conftest.py sets --xla_force_host_platform_device_count=4'
  return devices


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, 12, 12, 1)).astype(np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def _state(model):
  return create_train_state(model, optax.adam(1e-2), (1, 12, 12, 1), jax.random.PRNGKey(0))


def test_jit_over_mesh_pmap_and_one_device_agree_on_the_same_global_batch():
  """4 devices x 4 examples (mesh jit and pmap) == 1 device x 16, BatchNorm included."""
  model = CNN(widths=(8, 16), dense_width=32, dropout_rate=0.0)
  pmap_model = model.clone(bn_axis_name='batch')
  step = functools.partial(steps.train_step, loss_fn=cross_entropy_loss)
  mesh = mesh_lib.make_mesh(_devices(4))
  replicated, sharded = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  mesh_step = jax.jit(step, in_shardings=(replicated, sharded), out_shardings=replicated)
  pmap_step = jax.pmap(functools.partial(step, axis_name='batch'), axis_name='batch',
                       devices=_devices(4))
  single_step = jax.jit(step)

  single, on_mesh = _state(model), jax.device_put(_state(model), replicated)
  pmapped = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 4), _state(pmap_model))
  for i in range(3):
    batch = _batch(seed=i)
    single, single_metrics = single_step(single, batch)
    on_mesh, mesh_metrics = mesh_step(on_mesh, mesh_lib.global_batch(batch, mesh, 16))
    pmapped, pmap_metrics = pmap_step(
        pmapped, jax.tree_util.tree_map(lambda x: x.reshape((4, 4) + x.shape[1:]), batch))
  assert on_mesh.params['Conv_0']['kernel'].sharding.is_fully_replicated
  unreplicated = jax.tree_util.tree_map(lambda x: x[0], pmapped)
  for other in (on_mesh, unreplicated):
    chex.assert_trees_all_close(other.params, single.params, rtol=RTOL, atol=ATOL)
    chex.assert_trees_all_close(dict(other.model_state), dict(single.model_state),
                                rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(mesh_metrics['loss'], single_metrics['loss'], rtol=1e-5)
  np.testing.assert_allclose(pmap_metrics['loss'][0], single_metrics['loss'], rtol=1e-5)


def test_dropout_masks_do_not_depend_on_the_device_count():
  """The step's dropout key is the state's, and threefry is partitionable: 4 shards
  draw the same masks as one device, so a mesh run equals a 1-device run with dropout."""
  model = MLP(hidden_widths=(32,), dropout_rate=0.5)
  step = functools.partial(steps.train_step, loss_fn=cross_entropy_loss)
  mesh = mesh_lib.make_mesh(_devices(4))
  mesh_step = jax.jit(step, in_shardings=(mesh_lib.replicated(mesh),
                                          mesh_lib.batch_sharding(mesh)))
  batch = _batch()
  single, _ = jax.jit(step)(_state(model), batch)
  on_mesh, _ = mesh_step(_state(model), mesh_lib.global_batch(batch, mesh, 16))
  chex.assert_trees_all_close(on_mesh.params, single.params, rtol=RTOL, atol=ATOL)


def test_batch_not_divisible_by_the_device_count_is_a_clear_error():
  mesh = mesh_lib.make_mesh(_devices(4))
  with pytest.raises(ValueError, match=r'config.batch_size=18 is not divisible by the 4 '
                                       r'devices .* use a multiple of 4, e.g. 16 or 20'):
    mesh_lib.check_batch_size(18, mesh)
  mesh_lib.check_batch_size(16, mesh)
  assert mesh_lib.round_up_to_devices(70, mesh) == 72


def test_one_process_feeds_every_row_and_the_batch_is_split_over_devices():
  mesh = mesh_lib.make_mesh(_devices(4))
  assert mesh_lib.local_rows(16, mesh) == (0, 1)
  batch = mesh_lib.global_batch(_batch(), mesh, 16)
  chex.assert_shape(batch['image'], (16, 12, 12, 1))
  assert [s.data.shape[0] for s in batch['image'].addressable_shards] == [4, 4, 4, 4]
  np.testing.assert_array_equal(batch['label'], _batch()['label'])


# --- the loop on a mesh -------------------------------------------------------------

def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      seed=3, batch_size=16, eval_batch_size=30, num_epochs=2, log_every_steps=3,
      progress_bar=False, compute_dtype='',
      optimizer=dict(name='adamw', learning_rate=3e-3, warmup_steps=2, weight_decay=1e-4)))
  config.update(overrides)
  return config


def _run(workdir, devices, config=None, max_steps=None, train_source=None, model=None):
  return train_and_evaluate(
      config or _config(), str(workdir),
      model=model or CNN(num_classes=3, widths=(4, 8), dense_width=16),
      train_source=train_source or band_source(100, 0), eval_source=band_source(70, 1),
      task=classification_task(mean=0.3, std=0.3), max_steps=max_steps, devices=devices)


def test_checkpoint_saved_on_4_devices_resumes_on_2_with_the_same_result(tmp_path):
  """4 devices to step 9 (mid epoch 2), then resumed on 2 == 4 devices throughout.

  Not bitwise: the gradient all-reduce sums 4 or 2 partial sums. Evaluation (70
  examples, eval batch 30 padded to 32 on 4 devices) still counts every example once.
  """
  whole = _run(tmp_path / 'whole', _devices(4))
  first = _run(tmp_path / 'moved', _devices(4), max_steps=9)
  assert sorted(os.listdir(tmp_path / 'moved' / 'checkpoints')) == ['6', '9']
  resumed = _run(tmp_path / 'moved', _devices(2))
  assert int(first.state.step) == 9 and int(resumed.state.step) == 12
  chex.assert_trees_all_close(resumed.state.params, whole.state.params, rtol=RTOL, atol=ATOL)
  chex.assert_trees_all_close(dict(resumed.state.model_state), dict(whole.state.model_state),
                              rtol=RTOL, atol=ATOL)
  assert [e['count'] for e in resumed.eval_history] == [70, 70]
  np.testing.assert_allclose(resumed.final_eval['loss'], whole.final_eval['loss'], rtol=1e-4)
  assert whole.final_eval['accuracy'] > 0.5


def test_loop_rejects_a_batch_not_divisible_by_the_devices(tmp_path):
  with pytest.raises(ValueError, match='config.batch_size=18 is not divisible by the 4'):
    _run(tmp_path, _devices(4), _config(batch_size=18))


def test_bfloat16_compute_keeps_float32_params_and_a_finite_falling_loss(tmp_path):
  result = _run(tmp_path, _devices(2), _config(compute_dtype='bfloat16', num_epochs=3))
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves(result.state.params)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  losses = [e['loss'] for e in result.eval_history]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert result.final_eval['accuracy'] > 0.5


@pytest.mark.parametrize('model', [MLP(num_classes=3, hidden_widths=(16,)),
                                   CNN(num_classes=3, widths=(4,), dense_width=8)])
def test_compute_dtype_switch_reaches_every_model(model):
  bf16 = _with_compute_dtype(model, 'bfloat16')
  assert bf16.dtype == jnp.bfloat16 and _with_compute_dtype(model, '') is model
  state = _state(bf16)
  state, metrics = jax.jit(functools.partial(steps.train_step, loss_fn=cross_entropy_loss))(
      state, _batch())
  assert metrics['loss'].dtype == jnp.float32 and np.isfinite(metrics['loss'])
  assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype('float32')}
  logits = steps.predict_step(state, _batch())
  assert logits.dtype == jnp.float32


def test_compute_dtype_on_a_model_without_a_dtype_field_is_a_clear_error():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class NoDtype(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(3)(x.reshape((x.shape[0], -1)))

  with pytest.raises(ValueError, match="compute_dtype='bfloat16': model NoDtype has no"):
    _with_compute_dtype(NoDtype(), 'bfloat16')


def test_label_outside_the_class_range_names_the_example(tmp_path):
  config = _config(seed=0)
  with pytest.raises(ValueError, match=r'training batch of step \d+ \(epoch 0\): example '
                                       r'\d+ .* has label 5, outside \[0, 2\]'):
    _run(tmp_path, _devices(1), config, train_source=band_source(32, 0, bad_label_at=7))
