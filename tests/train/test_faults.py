"""Faults end to end, in subprocesses: preemption (SIGTERM) and a crash mid-checkpoint.

Run as a script this file is the worker:
  `python tests/train/test_faults.py train WORKDIR OUT.npz [KILL_AFTER_SAVE_AT_STEP]`
      (the loop, tiny CNN; optionally SIGKILLs itself right after that checkpoint)
  `python tests/train/test_faults.py save DIRECTORY`         (checkpoints, forever)
"""
import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # run as a script
  sys.path.insert(0, REPO)

TIMEOUT_S = 300


def _env():
  # Two host devices: the preempted run goes through the mesh path as on a GPU box.
  return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu',
              XLA_FLAGS='--xla_force_host_platform_device_count=2')


def _command(*args):
  return [sys.executable, os.path.abspath(__file__), *map(str, args)]


def _kill_after_save_at(step):
  """SIGKILL this process as soon as the checkpoint of `step` is committed."""
  from train import checkpoint  # pylint: disable=g-import-not-at-top
  save = checkpoint.Checkpointer.save

  def save_then_die(self, state, *args, **kwargs):
    save(self, state, *args, **kwargs)
    if int(state.step) == step:
      os.kill(os.getpid(), signal.SIGKILL)

  checkpoint.Checkpointer.save = save_then_die


def _train_worker(workdir, out, kill_after_save_at=None):
  if kill_after_save_at is not None:
    _kill_after_save_at(int(kill_after_save_at))
  import ml_collections  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data.sources import Source  # pylint: disable=g-import-not-at-top
  from models.cnn import CNN  # pylint: disable=g-import-not-at-top
  from tasks.classification.task import classification_task  # pylint: disable=g-import-not-at-top
  from train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 48).astype(np.int32)
  images = rng.integers(0, 255, (48, 12, 12, 1)).astype(np.uint8)
  source = Source(tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels}),
                  48, ('a', 'b', 'c'), (12, 12, 1))
  # Many short epochs, a metric line per step (the parent watches it) and one
  # evaluation at the end: long enough to be interrupted, a few seconds in all.
  config = ml_collections.ConfigDict(dict(
      seed=1, batch_size=8, eval_batch_size=16, num_epochs=50, log_every_steps=1,
      eval_every_epochs=1000, progress_bar=False,
      optimizer=dict(name='adamw', learning_rate=1e-3, warmup_steps=2, weight_decay=1e-4)))
  result = train_and_evaluate(
      config, workdir, model=CNN(num_classes=3, widths=(4,), dense_width=8), task=
      classification_task(mean=0.5, std=0.3), train_source=source, eval_source=source)
  np.savez(out, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in
                   jax.tree_util.tree_leaves_with_path(result.state.params)})
  print(json.dumps({'preempted': result.preempted, 'step': int(result.state.step),
                    'train_seconds': result.train_seconds,
                    'eval_history': result.eval_history}))


def _big_state(step):
  """~20 MB of parameters and Adam moments, every value equal to `step`."""
  import optax  # pylint: disable=g-import-not-at-top
  from models.mlp import MLP  # pylint: disable=g-import-not-at-top
  from train.state import create_train_state  # pylint: disable=g-import-not-at-top
  state = create_train_state(MLP(hidden_widths=(2048,)), optax.adam(1e-3), (1, 28, 28, 1),
                             jax.random.PRNGKey(0))
  fill = lambda x: jax.numpy.full_like(x, step)  # noqa: E731
  return state.replace(step=step, params=jax.tree_util.tree_map(fill, state.params),
                       opt_state=jax.tree_util.tree_map(fill, state.opt_state))


def _save_worker(directory):
  from train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(directory)
  for step in range(1, 10_000):
    ckpt.save(_big_state(step), {'step': step})
    print(step, flush=True)


def _checkpoint_steps(directory):
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _wait_for_step(path, at_least, proc, deadline):
  """Until `path` (metrics.jsonl) logs a step >= `at_least`."""
  while time.time() < deadline:
    assert proc.poll() is None, 'the run finished before it could be interrupted'
    if os.path.exists(path):
      steps = [json.loads(line)['step'] for line in open(path) if line.strip()]
      if steps and max(steps) >= at_least:
        return
    time.sleep(0.02)
  raise TimeoutError(f'no step >= {at_least} in {path}')


def _run_to_end(workdir, out):
  done = subprocess.run(_command('train', workdir, out), env=_env(), cwd=REPO,
                        capture_output=True, text=True, timeout=TIMEOUT_S)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.slow  # three training subprocesses
def test_sigterm_saves_at_a_step_boundary_and_the_resumed_run_matches(tmp_path):
  """SIGTERM mid-run: a checkpoint at the next step boundary, exit 0; the rerun
  resumes there and ends bitwise equal to a run never interrupted (same 2 devices)."""
  workdir = tmp_path / 'interrupted'
  proc = subprocess.Popen(_command('train', workdir, tmp_path / 'first.npz'), env=_env(),
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_step(workdir / 'metrics.jsonl', 3, proc, time.time() + TIMEOUT_S)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, stderr[-3000:]
  first = json.loads(stdout.strip().splitlines()[-1])
  assert first['preempted'] and 3 <= first['step'] < 300, first
  assert 'saving a checkpoint at the next step boundary' in stderr
  assert _checkpoint_steps(workdir / 'checkpoints')[-1] == first['step']

  resumed, stderr = _run_to_end(workdir, tmp_path / 'resumed.npz')
  assert f'resuming from the checkpoint at step {first["step"]}' in stderr
  whole, _ = _run_to_end(tmp_path / 'whole', tmp_path / 'whole.npz')
  keys = ('preempted', 'step', 'eval_history')
  assert [resumed[k] for k in keys] == [whole[k] for k in keys]
  assert (resumed['preempted'], resumed['step']) == (False, 300)
  chex.assert_trees_all_equal(dict(np.load(tmp_path / 'resumed.npz')),
                              dict(np.load(tmp_path / 'whole.npz')))


@pytest.mark.slow  # three training subprocesses
def test_sigkill_right_after_the_last_checkpoint_loses_no_progress(tmp_path):
  """Killed the moment the last checkpoint is committed: the rerun trains nothing more
  and still reports the training time and the final evaluation of the killed run."""
  workdir = tmp_path / 'killed'
  killed = subprocess.run(_command('train', workdir, tmp_path / 'killed.npz', 300), env=_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert _checkpoint_steps(workdir / 'checkpoints')[-1] == 300
  rerun, stderr = _run_to_end(workdir, tmp_path / 'rerun.npz')
  assert 'resuming from the checkpoint at step 300' in stderr
  whole, _ = _run_to_end(tmp_path / 'whole', tmp_path / 'whole.npz')
  assert rerun['step'] == 300 and rerun['train_seconds'] > 0
  assert rerun['eval_history'] == whole['eval_history'] and len(whole['eval_history']) == 1
  chex.assert_trees_all_equal(dict(np.load(tmp_path / 'rerun.npz')),
                              dict(np.load(tmp_path / 'whole.npz')))


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_restorable(tmp_path):
  """A process saving ~20 MB checkpoints in a loop is SIGKILLed while orbax is
  writing one (its `<step>.orbax-checkpoint-tmp` directory is present); the latest
  committed checkpoint restores with every value intact, and saving goes on."""
  from train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  directory = tmp_path / 'ckpt'
  proc = subprocess.Popen(_command('save', directory), env=_env(), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  in_flight = None
  deadline = time.time() + TIMEOUT_S
  try:
    while in_flight is None and time.time() < deadline:
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      names = os.listdir(directory) if os.path.isdir(directory) else []
      committed = [n for n in names if n.isdigit()]
      partial = [n for n in names if n.endswith('.orbax-checkpoint-tmp')]
      if committed and partial:
        in_flight = partial[0]
        proc.send_signal(signal.SIGKILL)
      time.sleep(0.001)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait(timeout=60)
  assert in_flight is not None, 'never caught a checkpoint being written'
  assert proc.returncode == -signal.SIGKILL

  ckpt = Checkpointer(str(directory))
  latest = ckpt.latest_step()
  # (<=: the commit may win the race between seeing the temporary directory and the kill)
  assert latest is not None and latest <= int(in_flight.split('.')[0]), (latest, in_flight)
  restored = ckpt.restore_newest(_big_state(0)).state
  assert int(restored.step) == latest
  for leaf in jax.tree_util.tree_leaves((restored.params, restored.opt_state)):
    np.testing.assert_array_equal(leaf, latest)
  ckpt.save(_big_state(latest + 1), {})  # the directory is still usable
  assert ckpt.latest_step() == latest + 1
  ckpt.close()


# --- bad input: clear errors, no silent fallback ---------------------------------------

def test_a_missing_dataset_directory_says_how_to_provide_the_data(tmp_path):
  from data.sources import build_source  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match='does not exist. Point config.data.data_dir'):
    build_source({'source': 'fashion_mnist_idx', 'data_dir': str(tmp_path / 'nope')}, 'train')


def test_an_out_of_range_label_in_the_files_names_the_file_and_example(tmp_path):
  from data import idx  # pylint: disable=g-import-not-at-top
  from data.sources import build_source  # pylint: disable=g-import-not-at-top
  labels = np.arange(6) % 10
  labels[4] = 12
  idx.write_idx(str(tmp_path / 't10k-images-idx3-ubyte.gz'), np.zeros((6, 28, 28)))
  idx.write_idx(str(tmp_path / 't10k-labels-idx1-ubyte.gz'), labels)
  with pytest.raises(idx.IdxFormatError,
                     match=r't10k-labels-idx1-ubyte.gz: example 4 has label 12, expected \[0, 9\]'):
    build_source({'source': 'fashion_mnist_idx', 'data_dir': str(tmp_path)}, 'test')


if __name__ == '__main__':
  if sys.argv[1] == 'train':
    _train_worker(*sys.argv[2:])
  else:
    _save_worker(sys.argv[2])
