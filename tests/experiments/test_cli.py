"""The command line: an expected user error is one or two `error:` lines and exit 2,
before any work; `--debug` adds the traceback. Each test is one subprocess (~10 s)."""
import os
import subprocess
import sys

import allocator
from tests.conftest import shared_data_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  for name in ('LD_PRELOAD', allocator.GUARD, allocator.OPT_OUT):
    env.pop(name, None)
  return subprocess.run(
      [sys.executable, '-m', 'experiments.dense_vs_conv',
       '--config=experiments/dense_vs_conv.py:runlocal',
       '--config.data.source=fashion_mnist_idx',
       f'--config.data.data_dir={shared_data_path("fashion_mnist")}',
       '--config.progress_bar=False', *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _error_lines(done):
  """The lines this project printed (TensorFlow's C++ start-up lines are not ours)."""
  lines = [line for line in done.stderr.splitlines()
           if not line.startswith(('I0000', 'WARNING: All log messages'))]
  assert done.returncode == 2, done.stderr[-3000:]
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  assert lines and lines[0].startswith('error: '), done.stderr[-3000:]
  return lines


def test_a_typo_in_a_config_field_is_one_line_with_the_closest_name(tmp_path):
  lines = _error_lines(_run(f'--workdir={tmp_path / "w"}', '--config.num_epoch=3'))
  assert lines == ["error: --config.num_epoch=3: the config has no field 'num_epoch'; did "
                   "you mean 'num_epochs'?"]


def test_a_nonsense_value_stops_before_the_workdir_is_created(tmp_path):
  lines = _error_lines(_run(f'--workdir={tmp_path / "w"}', '--config.batch_size=0'))
  assert lines == ['error: config.batch_size=0; expected a positive integer (the global '
                   'batch).']
  assert not (tmp_path / 'w').exists()


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / 'file').write_text('not a directory')
  lines = _error_lines(_run(f'--workdir={tmp_path / "file"}'))
  assert lines == [f'error: --workdir={tmp_path / "file"} is a file, not a directory; pass a '
                   'directory (it is created if missing).']


def test_a_missing_data_directory_is_one_line(tmp_path):
  lines = _error_lines(_run(f'--workdir={tmp_path / "w"}',
                            f'--config.data.data_dir={tmp_path / "nothing"}'))
  assert lines == [f"error: IDX directory '{tmp_path / 'nothing'}' does not exist. Point "
                   'config.data.data_dir at a folder holding the four Fashion-MNIST .gz '
                   'files, or use the tfds source.']


def test_checkpoints_of_another_config_stop_the_command_before_any_work(tmp_path):
  """A finished MLP checkpoint made with the default learning rate; the command with
  another rate stops with the two-line message before loading any data."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from experiments import dense_vs_conv  # pylint: disable=g-import-not-at-top
  from models.mlp import MLP  # pylint: disable=g-import-not-at-top
  from train import run_record  # pylint: disable=g-import-not-at-top
  from train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  from train.state import create_train_state  # pylint: disable=g-import-not-at-top
  config = dense_vs_conv.get_config('runlocal')
  config.data.source, config.data.data_dir = 'fashion_mnist_idx', shared_data_path(
      'fashion_mnist')
  config.progress_bar = False
  state = create_train_state(MLP(hidden_widths=(4,)), optax.sgd(0.1), (1, 28, 28, 1),
                             jax.random.PRNGKey(0))
  ckpt = Checkpointer(str(tmp_path / 'mlp' / 'checkpoints'))
  ckpt.save(state.replace(step=16), run_record.describe(
      dense_vs_conv.model_config(config, 'mlp')))
  ckpt.close()
  done = _run(f'--workdir={tmp_path}', '--config.optimizer.learning_rate=0.001')
  lines = _error_lines(done)
  assert lines[0] == (f'error: the config differs from the one that made the checkpoints in '
                      f'{tmp_path / "mlp" / "checkpoints"} (step 16): optimizer.learning_rate: '
                      '0.002 -> 0.001.')
  assert lines[1].startswith('To resume, rerun with the saved values; to start afresh, use a '
                             'new --workdir;') and '--allow_config_change' in lines[1]
  assert len(lines) == 2 and sorted(os.listdir(tmp_path)) == ['mlp']


def test_which_exceptions_are_the_users():
  import errno  # pylint: disable=g-import-not-at-top
  from errors import ConfigError  # pylint: disable=g-import-not-at-top
  from experiments import cli  # pylint: disable=g-import-not-at-top
  from train.loop import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  for error in (ConfigError('x'), NonFiniteLossError('x'), FileNotFoundError('x'),
                OSError(errno.ENOSPC, 'No space left on device')):
    assert cli.is_user_error(error), error
  for error in (ValueError('x'), KeyError('x'), TypeError('x'), OSError(errno.EIO, 'I/O')):
    assert not cli.is_user_error(error), error


def test_debug_shows_the_traceback_too(tmp_path):
  done = _run(f'--workdir={tmp_path / "w"}', '--config.batch_size=0', '--debug')
  assert done.returncode == 2
  assert 'Traceback (most recent call last)' in done.stderr
  assert done.stderr.rstrip().splitlines()[-1] == (
      'error: config.batch_size=0; expected a positive integer (the global batch).')
  # `python -m experiments.<name>` re-executed itself with mimalloc (allocator.py)
  mimalloc = allocator.library_path() is not None and sys.platform == 'linux'
  assert ('allocator: mimalloc (' in done.stderr) is mimalloc, done.stderr[:2000]
