"""The README's "Adding a task" and "Adding an evaluator", done in a few lines each with
nothing changed in train/: a toy regression task (predict which row band is bright, as
a number) and a toy evaluator named in the config."""
import json
import os

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from errors import ConfigError
from train import predict
from train.evaluators import EVALUATORS
from train.loop import train_and_evaluate
from train.steps import normalized_image_inputs
from train.task import Task
from tests.toy_data import band_source


# ----- a new task: four functions and a Task -----
def band_loss(outputs, batch):
  error = outputs[:, 0] - batch['label'].astype(jnp.float32)
  loss = jnp.mean(error ** 2)
  return loss, {'loss': loss}


def band_sums(outputs, batch):
  valid = batch['valid'].astype(jnp.float32)
  error = outputs[:, 0] - batch['label'].astype(jnp.float32)
  return {'squared_error': jnp.sum(valid * error ** 2),
          'rounded_correct': jnp.sum(valid * (jnp.round(outputs[:, 0]) == batch['label'])),
          'count': jnp.sum(valid)}


class Regressor(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(1)(nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1))))


BAND_TASK = Task(loss_fn=band_loss, sums_fn=band_sums,
                 inputs_fn=normalized_image_inputs(0.3, 0.3))


# ----- a new evaluator: registered once, named in the config -----
@EVALUATORS.register('toy_mean_output')
def mean_output(context, scale: float = 1.0):
  images = next(context.eval_source.dataset.batch(1000).as_numpy_iterator())['image']

  def evaluate(state):
    outputs = predict.predict_arrays(state, images, batch_size=context.batch_size,
                                     inputs_fn=context.task.inputs_fn)
    return {'value': scale * float(outputs.mean()), 'histogram': np.histogram(
        outputs, bins=3, range=(-1, 3))[0], 'extremes': {'min': outputs.min(),
                                                         'max': outputs.max()}}
  return evaluate


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      seed=0, batch_size=20, eval_batch_size=32, num_epochs=3, log_every_steps=5,
      progress_bar=False, evals={'mean': dict(type='toy_mean_output', scale=2.0)},
      optimizer=dict(name='adamw', learning_rate=1e-2, warmup_steps=0, weight_decay=0.0)))
  config.update(overrides)
  return config


def _train(workdir, config):
  return train_and_evaluate(config, str(workdir), model=Regressor(),
                            train_source=band_source(200, 0),
                            eval_source=band_source(60, 1), task=BAND_TASK)


def test_a_new_task_and_evaluator_train_evaluate_and_survive_a_resume(tmp_path):
  result = _train(tmp_path, _config())
  final = result.final_eval
  assert [e['epoch'] for e in result.eval_history] == [1, 2, 3]
  # The task's sums, divided once by the count (the default means_fn).
  assert final['count'] == 60 and final['squared_error'] < 0.2
  assert final['rounded_correct'] > 0.8
  # The evaluator's results: prefixed by its name, computed on the final state.
  images = next(band_source(60, 1).dataset.batch(60).as_numpy_iterator())['image']
  outputs = predict.predict_arrays(result.state, images, batch_size=32,
                                   inputs_fn=BAND_TASK.inputs_fn)
  assert final['mean/value'] == pytest.approx(2.0 * outputs.mean(), rel=1e-6)
  assert sum(final['mean/histogram']) == 60  # lists survive the JSON run record
  assert final['mean/extremes'] == {'min': pytest.approx(float(outputs.min()), rel=1e-6),
                                    'max': pytest.approx(float(outputs.max()), rel=1e-6)}
  logged = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['eval/mean/value'] for r in logged if 'eval/mean/value' in r] == [
      e['mean/value'] for e in result.eval_history]
  # A finished run rerun restores its history, evaluator results included.
  again = _train(tmp_path, _config())
  assert again.eval_history == result.eval_history


def test_an_unknown_evaluator_type_is_a_config_error_naming_the_entry(tmp_path):
  with pytest.raises(ConfigError, match=r"config.evals.oops.type='no_such'; expected a "
                     r"registered evaluator: .*toy_mean_output"):
    _train(tmp_path, _config(evals={'oops': dict(type='no_such')}))
  with pytest.raises(ConfigError, match=r"config.evals.mean \(toy_mean_output\): .*"
                     r"unexpected keyword argument 'bins'"):
    _train(tmp_path, _config(evals={'mean': dict(type='toy_mean_output', bins=3)}))
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_an_evaluator_runs_every_n_epochs_and_always_at_the_end(tmp_path):
  result = _train(tmp_path, _config(num_epochs=5, evals={
      'sparse': dict(type='toy_mean_output', every_epochs=2),
      'last': dict(type='toy_mean_output', every_epochs=0)}))
  ran = {name: [e['epoch'] for e in result.eval_history if f'{name}/value' in e]
         for name in ('sparse', 'last')}
  assert ran == {'sparse': [2, 4, 5], 'last': [5]}
  assert [e['epoch'] for e in result.eval_history] == [1, 2, 3, 4, 5]  # the task's sums
  with pytest.raises(ConfigError, match=r'config.evals.x.every_epochs=-1: expected an '
                     r'integer >= 0'):
    _train(tmp_path / 'bad', _config(evals={'x': dict(type='toy_mean_output',
                                                       every_epochs=-1)}))
