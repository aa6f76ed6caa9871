"""The one training loop: exact evaluation, checkpoints and resume equality."""
import os

import chex
import ml_collections
import pytest

from models.cnn import CNN
from tasks.classification.task import classification_task
from train.loop import NonFiniteLossError, train_and_evaluate
from train.metric_writer import read_metrics
from tests.toy_data import band_source


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      seed=3, batch_size=16, eval_batch_size=32, num_epochs=2, log_every_steps=3,
      progress_bar=False,
      optimizer=dict(name='adamw', learning_rate=3e-3, warmup_steps=2, weight_decay=1e-4)))
  config.update(overrides)
  return config


def _run(workdir, config=None, max_steps=None, train_n=100):
  return train_and_evaluate(
      config or _config(), str(workdir), model=CNN(num_classes=3, widths=(4, 8), dense_width=16),
      train_source=band_source(train_n, 0), eval_source=band_source(70, 1),
      task=classification_task(mean=0.3, std=0.3), max_steps=max_steps)


def test_trains_evaluates_every_example_and_logs(tmp_path):
  result = _run(tmp_path)
  assert result.steps_per_epoch == 6  # 100 // 16, remainder dropped
  assert [e['epoch'] for e in result.eval_history] == [1, 2]
  # 70 examples in batches of 32: the padded last batch adds none.
  assert all(e['count'] == 70 for e in result.eval_history)
  assert result.final_eval['accuracy'] > 0.5
  metrics = read_metrics(str(tmp_path))
  assert [s for s, _ in metrics['eval/accuracy']] == [6, 12]
  assert metrics['train/loss'][0][1] > metrics['train/loss'][-1][1]
  assert os.listdir(tmp_path / 'tensorboard')
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['12', '6']


def test_resume_mid_epoch_gives_bitwise_the_same_params(tmp_path):
  """Interrupted at step 9 (mid epoch 2), rerun to the end == uninterrupted run.

  Bitwise: the same XLA program on the same data order and dropout keys is
  deterministic on the CPU, so no tolerance is needed.
  """
  uninterrupted = _run(tmp_path / 'a')
  first = _run(tmp_path / 'b', max_steps=9)
  assert int(first.state.step) == 9
  assert sorted(os.listdir(tmp_path / 'b' / 'checkpoints')) == ['6', '9']
  resumed = _run(tmp_path / 'b')
  assert int(resumed.state.step) == 12
  chex.assert_trees_all_equal(resumed.state.params, uninterrupted.state.params)
  chex.assert_trees_all_equal(resumed.state.opt_state, uninterrupted.state.opt_state)
  chex.assert_trees_all_equal(resumed.state.model_state, uninterrupted.state.model_state)
  assert resumed.eval_history == uninterrupted.eval_history


def test_rerun_of_a_finished_run_trains_no_further(tmp_path):
  done = _run(tmp_path)
  again = _run(tmp_path)
  assert int(again.state.step) == int(done.state.step)
  chex.assert_trees_all_equal(again.state.params, done.state.params)
  assert again.eval_history == done.eval_history


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  good = _run(tmp_path, _config(num_epochs=1))
  config = _config(num_epochs=3, allow_config_change=True)
  config.optimizer.learning_rate = 1e30  # the resumed run diverges at once
  with pytest.raises(NonFiniteLossError, match='non-finite training loss .* up to step 9'):
    _run(tmp_path, config)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['6']
  restored = _run(tmp_path, _config(num_epochs=1))  # finished: restores, trains nothing
  chex.assert_trees_all_equal(restored.state.params, good.state.params)


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
  config = _config()
  config.optimizer.learning_rate = 1e30
  with pytest.raises(NonFiniteLossError, match=r'up to step 3; stopping. Lower '
                     r'config.optimizer.learning_rate \(or clip gradients\) and rerun; no '
                     'checkpoint was saved yet.'):
    _run(tmp_path, config)


def test_batch_larger_than_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='config.batch_size=16 is larger than the training set'):
    _run(tmp_path, train_n=10)
