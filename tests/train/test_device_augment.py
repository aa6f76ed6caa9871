"""config.augment_on='device': the policy runs inside the jitted step (data/augment_jax.py);
the run trains, resumes bit for bit, and runs on a data-parallel mesh."""
import os
import types

import chex
import jax
import ml_collections
import numpy as np
import pytest

from data.augment_jax import build_device_policy
from errors import ConfigError
from models.cnn import CNN
from tasks.classification.task import classification_task
from train import config_check, steps
from train.loop import train_and_evaluate
from tests.toy_data import band_source

POLICY = 'flip_lr|pad_crop(1)|brightness(0.1)'  # the bands are rows: labels survive


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      seed=3, batch_size=16, eval_batch_size=32, num_epochs=2, log_every_steps=3,
      progress_bar=False, augment=POLICY, augment_on='device',
      optimizer=dict(name='adamw', learning_rate=3e-3, warmup_steps=2, weight_decay=1e-4)))
  config.update(overrides)
  return config


def _run(workdir, config=None, max_steps=None, devices=None, device_augment_fn='default'):
  config = config or _config()
  if device_augment_fn == 'default':
    device_augment_fn = build_device_policy(config.augment) if config.augment else None
  return train_and_evaluate(
      config, str(workdir), model=CNN(num_classes=3, widths=(4, 8), dense_width=16),
      train_source=band_source(100, 0), eval_source=band_source(70, 1),
      task=classification_task(mean=0.3, std=0.3), max_steps=max_steps, devices=devices,
      device_augment_fn=device_augment_fn)


def test_device_augmentation_trains_and_resumes_bit_for_bit(tmp_path):
  uninterrupted = _run(tmp_path / 'a', devices=jax.devices()[:1])
  first = _run(tmp_path / 'b', max_steps=9, devices=jax.devices()[:1])
  assert int(first.state.step) == 9
  resumed = _run(tmp_path / 'b', devices=jax.devices()[:1])
  chex.assert_trees_all_equal(resumed.state.params, uninterrupted.state.params)
  chex.assert_trees_all_equal(resumed.state.opt_state, uninterrupted.state.opt_state)
  assert resumed.eval_history == uninterrupted.eval_history
  assert uninterrupted.final_eval['accuracy'] > 0.5
  # The augmentation is applied: without it the same run ends elsewhere.
  plain = _run(tmp_path / 'c', _config(augment=''), devices=jax.devices()[:1])
  assert not np.allclose(plain.state.params['Dense_0']['kernel'],
                         uninterrupted.state.params['Dense_0']['kernel'])


def test_device_augmentation_on_a_data_parallel_mesh_matches_one_device(tmp_path):
  """The batch is sharded over 4 devices; the keys are per global example, so the
  augmented batch is the one-device batch (results equal up to the all-reduce order)."""
  one = _run(tmp_path / 'one', _config(num_epochs=1), devices=jax.devices()[:1])
  four = _run(tmp_path / 'four', _config(num_epochs=1), devices=jax.devices()[:4])
  chex.assert_trees_all_close(four.state.params, one.state.params, rtol=1e-4, atol=1e-5)


def test_the_augmentation_key_is_a_stream_of_its_own_from_the_step():
  rng = jax.random.PRNGKey(0)
  key = steps.augment_key(types.SimpleNamespace(rng=rng, step=5))
  np.testing.assert_array_equal(key, steps.augment_key(types.SimpleNamespace(rng=rng, step=5)))
  assert not np.array_equal(key, steps.augment_key(types.SimpleNamespace(rng=rng, step=6)))
  assert all(not np.array_equal(key, jax.random.fold_in(rng, s)) for s in range(10))


def test_the_config_names_the_path_and_the_loop_holds_to_it(tmp_path):
  with pytest.raises(ConfigError, match="config.augment_on='gpu'"):
    config_check.check_config(_config(augment_on='gpu'))
  with pytest.raises(ConfigError, match="unknown augmentation op 'hue'"):
    config_check.check_config(_config(augment='hue(0.1)'))  # host-only op
  config_check.check_config(_config(augment='hue(0.1)', augment_on='host'))
  with pytest.raises(ConfigError, match="augment_on='host' but .* device_augment_fn"):
    _run(tmp_path, _config(augment_on='host'))
  assert not os.path.exists(tmp_path / 'checkpoints')
