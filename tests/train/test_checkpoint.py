"""Checkpoints: state and run record in one commit; a corrupt newest one falls back."""
import glob
import os
import shutil
import sys
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.mlp import MLP
from train.checkpoint import Checkpointer, CheckpointError
from train.state import create_train_state


def _state(step):
  """A small MLP state (~0.2 MB with Adam moments), every value derived from `step`."""
  state = create_train_state(MLP(hidden_widths=(64,)), optax.adam(1e-3), (1, 28, 28, 1),
                             jax.random.PRNGKey(0))
  shift = lambda x: x + step  # noqa: E731
  return state.replace(step=jnp.asarray(step, jnp.int32),
                       params=jax.tree_util.tree_map(shift, state.params))


def _record(step):
  return {'config': {'seed': 0}, 'progress': {'step': step, 'eval_history': [{'x': 0.1}]}}


def _saved(directory, steps=(1, 2, 3)):
  ckpt = Checkpointer(str(directory))
  for step in steps:
    ckpt.save(_state(step), _record(step))
  return ckpt


def _data_files(step_dir):
  """Every OCDBT data file of a step. Orbax's layout of arrays into files varies from
  run to run, and a file may hold only bytes no array reads any more, so a corruption
  that should always be seen touches them all (a torn or bit-rotted write)."""
  files = [p for p in glob.glob(os.path.join(step_dir, 'state', '**', '*'), recursive=True)
           if os.path.isfile(p) and os.sep + 'd' + os.sep in p]
  assert files, f'no OCDBT data files under {step_dir}: has orbax changed its layout?'
  return files


def _truncate(path, keep=0.5):
  with open(path, 'r+b') as f:
    f.truncate(int(os.path.getsize(path) * keep))


def _flip_one_byte(path):
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0x01
  open(path, 'wb').write(bytes(data))


CORRUPTIONS = {
    'truncated data files': lambda d: [_truncate(p) for p in _data_files(d)],
    'flipped bytes in the data files': lambda d: [_flip_one_byte(p) for p in _data_files(d)],
    'truncated _METADATA': lambda d: _truncate(os.path.join(d, 'state', '_METADATA')),
    'missing state item': lambda d: shutil.rmtree(os.path.join(d, 'state')),
    'truncated run record': lambda d: _truncate(os.path.join(d, 'run', 'run.json')),
    'empty step directory': lambda d: (shutil.rmtree(d), os.mkdir(d)),
}


def test_state_and_record_round_trip_and_two_are_kept(tmp_path):
  ckpt = _saved(tmp_path / 'ckpt')
  assert ckpt.all_steps() == [2, 3]
  restored = ckpt.restore_newest(_state(0))
  assert restored.step == 3
  chex.assert_trees_all_equal(restored.state.params, _state(3).params)
  assert restored.record['progress'] == _record(3)['progress']
  assert len(restored.record['state_sha256']) == 64
  ckpt.close()


def test_an_empty_directory_restores_nothing(tmp_path):
  assert Checkpointer(str(tmp_path / 'ckpt')).restore_newest(_state(0)) is None


@pytest.mark.parametrize('kind', sorted(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path, kind, capfd):
  _saved(tmp_path / 'ckpt').close()
  newest = tmp_path / 'ckpt' / '3'
  CORRUPTIONS[kind](str(newest))
  ckpt = Checkpointer(str(tmp_path / 'ckpt'))
  restored = ckpt.restore_newest(_state(0))
  assert restored.step == 2
  chex.assert_trees_all_equal(restored.state.params, _state(2).params)
  warning = capfd.readouterr().err
  assert f'skipping the checkpoint of step 3 ({newest})' in warning, warning
  # Moved aside, not deleted; the step can be saved again.
  assert (tmp_path / 'corrupt_checkpoints' / '3').is_dir()
  assert ckpt.all_steps() == [2]
  ckpt.save(_state(3), _record(3))
  assert ckpt.restore_newest(_state(0)).step == 3
  ckpt.close()


def test_when_no_checkpoint_restores_one_error_names_the_directory(tmp_path, capfd):
  _saved(tmp_path / 'ckpt').close()
  _truncate(os.path.join(tmp_path, 'ckpt', '3', 'state', '_METADATA'))
  for path in _data_files(os.path.join(tmp_path, 'ckpt', '2')):
    _truncate(path)
  ckpt = Checkpointer(str(tmp_path / 'ckpt'))
  with pytest.raises(CheckpointError, match=f'no checkpoint in {tmp_path / "ckpt"} restores '
                     r'\(step 3: JSONDecodeError.*; step 2: \w+: .*\)'):
    ckpt.restore_newest(_state(0))
  assert sorted(os.listdir(tmp_path / 'corrupt_checkpoints')) == ['2', '3']
  assert capfd.readouterr().err.count('warning: skipping') == 2


def test_a_check_that_raises_stops_without_skipping_anything(tmp_path):
  _saved(tmp_path / 'ckpt').close()
  ckpt = Checkpointer(str(tmp_path / 'ckpt'))

  def refuse(record, step):
    raise RuntimeError(f'not this run: step {step}')

  with pytest.raises(RuntimeError, match='not this run: step 3'):
    ckpt.restore_newest(_state(0), refuse)
  assert ckpt.all_steps() == [2, 3] and not (tmp_path / 'corrupt_checkpoints').exists()


def test_a_checkpoint_of_the_older_format_is_refused_with_a_way_on(tmp_path):
  import flax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(str(tmp_path / 'ckpt'),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(4, args=ocp.args.StandardSave(flax.serialization.to_state_dict(_state(4))))
  manager.wait_until_finished()
  manager.close()
  with pytest.raises(CheckpointError, match='written by an older redconv.*new --workdir'):
    Checkpointer(str(tmp_path / 'ckpt')).restore_newest(_state(0))


def test_a_failed_write_names_the_directory_and_the_kept_step(tmp_path, monkeypatch):
  ckpt = _saved(tmp_path / 'ckpt', steps=(1,))

  def disk_full(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(ckpt._manager, 'save', disk_full)  # pylint: disable=protected-access
  with pytest.raises(CheckpointError, match=r'could not write the checkpoint of step 2 to '
                     rf'{tmp_path / "ckpt"}: .*No space left on device. The checkpoint of '
                     'step 1 is kept.'):
    ckpt.save(_state(2), _record(2))


def test_max_to_keep_below_two_is_refused(tmp_path):
  with pytest.raises(ValueError, match='keep at least 2'):
    Checkpointer(str(tmp_path / 'ckpt'), max_to_keep=1)


def test_the_checksum_sees_a_single_changed_value():
  from train.checkpoint import state_checksum  # pylint: disable=g-import-not-at-top
  tree = {'a': np.zeros((3, 4), np.float32), 'b': np.arange(5)}
  changed = {'a': tree['a'].copy(), 'b': tree['b']}
  changed['a'][1, 2] = np.float32(1e-30)
  assert state_checksum(tree) != state_checksum(changed)
  assert state_checksum(tree) == state_checksum({k: v.copy() for k, v in tree.items()})


def test_reads_abandoned_by_a_failed_restore_print_nothing_when_freed(monkeypatch):
  """After a failed restore orbax's pending read coroutines are freed unfinished, later:
  exactly those are dropped from sys.unraisablehook, anything else passes."""
  from train import checkpoint  # pylint: disable=g-import-not-at-top
  unraisable = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: unraisable.append(u.object))
  checkpoint._silence_abandoned_reads()  # pylint: disable=protected-access

  async def _read_array_index_and_device_put():  # orbax's read
    pass

  async def some_other_coroutine():
    pass

  for coroutine in (_read_array_index_and_device_put(), some_other_coroutine()):
    sys.unraisablehook(types.SimpleNamespace(object=coroutine))
    coroutine.close()
  assert [c.cr_code.co_name for c in unraisable] == ['some_other_coroutine']
