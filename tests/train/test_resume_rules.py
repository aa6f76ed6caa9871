"""The loop's resume rules: same config resumes; a changed one stops before any work; a
corrupt newest checkpoint falls back; the progress lives inside the checkpoint."""
import os
import shutil

import chex
import numpy as np
import pytest

from errors import ConfigError
import tasks.evaluators  # noqa: F401  (registers shift_robustness)
from models.cnn import CNN
from train.loop import TrainResult
from train import run_record
from train.run_record import ConfigChangedError
from tests.toy_data import band_source
from tests.train.test_checkpoint import CORRUPTIONS
from tests.train.test_loop import _config, _run


def _listing(path):
  return sorted(os.path.relpath(os.path.join(d, f), path)
                for d, _, files in os.walk(path) for f in files)


def test_a_changed_config_stops_before_any_work_naming_each_field(tmp_path):
  _run(tmp_path, _config(num_epochs=1))
  before = {p: os.path.getmtime(tmp_path / p) for p in _listing(tmp_path)}
  config = _config(num_epochs=1, augment='flip_lr')
  config.optimizer.learning_rate = 1e-3
  with pytest.raises(ConfigChangedError) as raised:
    _run(tmp_path, config)
  first, second = str(raised.value).splitlines()
  assert first == (f'the config differs from the one that made the checkpoints in '
                   f'{tmp_path / "checkpoints"} (step 6): augment: (absent) -> \'flip_lr\'; '
                   'optimizer.learning_rate: 0.003 -> 0.001.')
  assert 'new --workdir' in second and '--allow_config_change' in second
  assert {p: os.path.getmtime(tmp_path / p) for p in _listing(tmp_path)} == before


def test_fields_that_cannot_change_the_result_do_not_block_resuming(tmp_path):
  done = _run(tmp_path, _config(num_epochs=1))
  again = _run(tmp_path, _config(num_epochs=1, log_every_steps=1, eval_batch_size=7,
                                 progress_bar=True, eval_every_epochs=5))
  chex.assert_trees_all_equal(again.state.params, done.state.params)
  assert again.eval_history == done.eval_history


def test_an_evaluators_schedule_does_not_block_resuming_but_what_it_measures_does(tmp_path):
  evals = lambda **shift: dict(evals=dict(shift=dict(type='shift_robustness', **shift)))
  done = _run(tmp_path, _config(num_epochs=1, **evals(shifts=(0, 1), every_epochs=1)))
  again = _run(tmp_path, _config(num_epochs=1, **evals(shifts=(0, 1), every_epochs=0)))
  chex.assert_trees_all_equal(again.state.params, done.state.params)
  with pytest.raises(ConfigChangedError, match=r'evals.shift.shifts: \[0, 1\] -> \[0, 2\]'):
    _run(tmp_path, _config(num_epochs=1, **evals(shifts=(0, 2), every_epochs=0)))


def test_allow_config_change_continues_and_records_the_change(tmp_path, capfd):
  _run(tmp_path, _config(num_epochs=1))
  longer = _run(tmp_path, _config(num_epochs=2, allow_config_change=True))
  assert int(longer.state.step) == 12 and [e['epoch'] for e in longer.eval_history] == [1, 2]
  assert longer.config_changes == [{'step': 6, 'changed': ['num_epochs: 1 -> 2']}]
  assert 'under a changed config (allowed): num_epochs: 1 -> 2' in capfd.readouterr().err
  assert run_record.changes_note(longer.config_changes) == (  # the reports say so too
      'Resumed at step 6 under a changed config: num_epochs: 1 -> 2.')
  # The new checkpoints carry the new config (and the change): a plain rerun resumes.
  again = _run(tmp_path, _config(num_epochs=2))
  assert again.config_changes == longer.config_changes
  chex.assert_trees_all_equal(again.state.params, longer.state.params)


def test_changed_shapes_are_one_clear_message_even_with_the_override(tmp_path):
  from train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from tasks.classification.task import classification_task  # pylint: disable=g-import-not-at-top
  _run(tmp_path, _config(num_epochs=1))
  with pytest.raises(ConfigChangedError, match=r"the model's arrays do not fit the "
                     rf'checkpoints in {tmp_path / "checkpoints"} \(step 6\): '
                     r"\['params'\]\['BatchNorm_0'\]\['bias'\]: float32\[4\] -> float32\[5\]; .*"
                     r'and \d+ more.\nThey cannot be restored into this model, override or not'):
    train_and_evaluate(_config(num_epochs=1, allow_config_change=True), str(tmp_path),
                       model=CNN(num_classes=3, widths=(5, 8), dense_width=16),
                       train_source=band_source(100, 0), eval_source=band_source(70, 1),
                       task=classification_task())


def test_changed_training_data_blocks_resuming(tmp_path):
  _run(tmp_path, _config(num_epochs=1))
  with pytest.raises(ConfigChangedError, match='data train_examples: 100 -> 96'):
    _run(tmp_path, _config(num_epochs=1), train_n=96)


def _interrupted_at_9(tmp_path):
  first = _run(tmp_path / 'b', max_steps=9)
  assert sorted(os.listdir(tmp_path / 'b' / 'checkpoints')) == ['6', '9']
  return first


def _resume_after(tmp_path, kind, capfd):
  workdir = tmp_path / kind.replace(' ', '_')
  shutil.copytree(tmp_path / 'b', workdir)
  CORRUPTIONS[kind](str(workdir / 'checkpoints' / '9'))
  resumed = _run(workdir)
  err = capfd.readouterr().err
  assert (f'warning: skipping the checkpoint of step 9 ({workdir / "checkpoints" / "9"}): '
          'it does not restore (') in err, err
  assert f'resuming from the checkpoint at step 6 in {workdir}' in err
  assert (workdir / 'corrupt_checkpoints' / '9').is_dir()
  return resumed


def _assert_same_run(resumed: TrainResult, whole: TrainResult):
  assert int(resumed.state.step) == 12
  chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
  chex.assert_trees_all_equal(resumed.state.opt_state, whole.state.opt_state)
  assert resumed.eval_history == whole.eval_history


def test_a_truncated_newest_checkpoint_falls_back_and_ends_the_same(tmp_path, capfd):
  whole = _run(tmp_path / 'a')
  _interrupted_at_9(tmp_path)
  _assert_same_run(_resume_after(tmp_path, 'truncated data files', capfd), whole)


@pytest.mark.slow  # five more resumed runs
def test_every_corruption_of_the_newest_checkpoint_falls_back_and_ends_the_same(
    tmp_path, capfd):
  whole = _run(tmp_path / 'a')
  _interrupted_at_9(tmp_path)
  for kind in sorted(set(CORRUPTIONS) - {'truncated data files'}):
    _assert_same_run(_resume_after(tmp_path, kind, capfd), whole)


def test_progress_is_read_from_the_checkpoint_not_from_files_beside_it(tmp_path):
  """Whatever happens to the files outside the checkpoint (a kill right after the
  commit, a cleanup), the rerun reports the training time and history it saved."""
  done = _run(tmp_path)
  assert done.train_seconds > 0 and sorted(done.seconds_by_step) == [6, 12]
  for name in os.listdir(tmp_path):
    if name != 'checkpoints':
      path = tmp_path / name
      shutil.rmtree(path) if path.is_dir() else os.remove(path)
  again = _run(tmp_path)
  assert again.train_seconds == done.train_seconds
  assert again.seconds_by_step == done.seconds_by_step
  assert again.eval_history == done.eval_history and len(again.eval_history) == 2


def test_nonsense_settings_fail_before_any_work(tmp_path):
  for overrides in ({'batch_size': 0}, {'batch_size': -8}, {'num_epochs': 0}):
    with pytest.raises(ConfigError, match=f'config.{next(iter(overrides))}='):
      _run(tmp_path, _config(**overrides))
  assert not os.listdir(tmp_path)


def test_an_image_size_the_model_cannot_take_is_a_config_error(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data.sources import Source  # pylint: disable=g-import-not-at-top
  from models.mask_rcnn.model import MaskRCNN  # pylint: disable=g-import-not-at-top
  from tasks.instance.task import instance_task  # pylint: disable=g-import-not-at-top
  from train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  images = np.zeros((8, 30, 30, 3), np.uint8)
  source = Source(tf.data.Dataset.from_tensor_slices({'image': images}), 8, ('bg', 'a'),
                  (30, 30, 3))
  with pytest.raises(ConfigError, match=r'model MaskRCNN could not be initialised for the '
                     r'training images \[30, 30, 3\]: .*must be a multiple of the coarsest stride 8'):
    train_and_evaluate(_config(batch_size=4), str(tmp_path),
                       model=MaskRCNN(num_classes=1, stage_widths=(8, 8, 8)),
                       train_source=source, eval_source=source, task=instance_task(0.5, 0.25))
  assert not os.listdir(tmp_path)


def test_images_per_second_without_training_time_is_nan_not_a_crash():
  empty = TrainResult(state=None, eval_history=[], train_seconds=0.0, compile_seconds=0.0,
                      steps_per_epoch=1, num_params=0)
  assert np.isnan(empty.images_per_second(16))
