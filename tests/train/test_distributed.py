"""Several processes through `jax.distributed` on this machine (loopback only).

Two processes with one CPU device each train the CNN through the one loop, each
reading its own half of every global batch; they must end with identical parameters,
equal to one process training on the whole batches. Run as a script, this file is
the worker: `python tests/train/test_distributed.py WORKDIR OUT.npz`.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import chex
import jax
import ml_collections
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # run as a script
  sys.path.insert(0, REPO)

from data import pipeline  # noqa: E402
from models.cnn import CNN  # noqa: E402
from train import distributed  # noqa: E402
from tasks.classification.task import classification_task  # noqa: E402
from train.loop import train_and_evaluate  # noqa: E402
from tests.toy_data import band_source  # noqa: E402

TIMEOUT_S = 300


def _train(workdir, devices=None, **overrides):
  config = ml_collections.ConfigDict(dict(
      seed=5, batch_size=16, eval_batch_size=30, num_epochs=2, log_every_steps=2,
      eval_every_epochs=1, progress_bar=False,
      optimizer=dict(name='adamw', learning_rate=3e-3, warmup_steps=2, weight_decay=1e-4)))
  config.update(overrides)
  # Dropout on: its masks are drawn for the global batch, whatever the process count.
  return train_and_evaluate(
      config, str(workdir), model=CNN(num_classes=3, widths=(4, 8), dense_width=16),
      train_source=band_source(64, 0), eval_source=band_source(40, 1), task=classification_task(mean=0.3, std=0.3),
      devices=devices)


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _worker(workdir, out, num_epochs='2'):
  from train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  # The loop joins the runtime from the REDCONV_* variables. Long runs (the preemption
  # test) log every step and evaluate only at the end.
  overrides = {} if num_epochs == '2' else dict(
      num_epochs=int(num_epochs), log_every_steps=1, eval_every_epochs=10_000)
  result = _train(workdir, **overrides)
  rows = mesh_lib.local_rows(16, mesh_lib.make_mesh())
  np.savez(out, **_flat({'params': result.state.params,
                         'model_state': dict(result.state.model_state)}))
  with open(out + '.json', 'w') as f:
    json.dump({'process_index': jax.process_index(), 'process_count': jax.process_count(),
               'rows': rows, 'eval_history': result.eval_history,
               'preempted': result.preempted, 'step': int(result.state.step)}, f)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_settings_are_a_no_op_for_one_process_and_complete_for_several():
  assert distributed.settings(environ={}) is None
  assert distributed.settings(environ={'REDCONV_NUM_PROCESSES': '1'}) is None
  env = {'REDCONV_COORDINATOR': '10.0.0.1:1234', 'REDCONV_NUM_PROCESSES': '4',
         'REDCONV_PROCESS_ID': '3', 'REDCONV_LOCAL_DEVICE_IDS': '0,1'}
  assert distributed.settings(environ=env) == {
      'coordinator_address': '10.0.0.1:1234', 'num_processes': 4, 'process_id': 3,
      'local_device_ids': [0, 1]}
  assert distributed.settings({'process_id': 0}, env)['process_id'] == 0  # config wins
  assert distributed.settings(environ={'REDCONV_DISTRIBUTED': 'auto'}) == {}
  with pytest.raises(ValueError, match=r'num_processes=2 but process_id \(REDCONV_PROCESS_ID\)'):
    distributed.settings(environ={'REDCONV_NUM_PROCESSES': '2',
                                  'REDCONV_COORDINATOR': 'h:1'})
  with pytest.raises(ValueError, match='REDCONV_NUM_PROCESSES=.two.'):
    distributed.settings(environ={'REDCONV_NUM_PROCESSES': 'two'})


def test_host_shards_are_disjoint_and_together_the_global_batch():
  ds = band_source(40, 0).dataset
  seeded = lambda f, seed: {**f, 'seed': seed}  # noqa: E731
  def batches(**kw):
    return list(pipeline.as_numpy(pipeline.train_batches(
        ds, batch_size=8, seed=1, epoch=2, augment_fn=seeded, skip_batches=1, **kw)))
  whole = batches()
  halves = [batches(num_shards=2, shard_index=i) for i in range(2)]
  assert len(whole) == len(halves[0]) == len(halves[1]) == 4
  for b, h0, h1 in zip(whole, *halves):
    for key in b:  # the same examples with the same augmentation seeds
      np.testing.assert_array_equal(np.concatenate([h0[key], h1[key]]), b[key])


def _start_two_processes(workdir, outdir, *args):
  """Two workers, one CPU device each, joined through a coordinator on loopback."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=1',
             REDCONV_COORDINATOR=f'127.0.0.1:{_free_port()}', REDCONV_NUM_PROCESSES='2')
  return [subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), str(workdir), str(outdir / f'p{i}.npz'),
       *args], env=dict(env, REDCONV_PROCESS_ID=str(i)), cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _finish(procs):
  try:
    logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


@pytest.mark.slow
def test_two_processes_end_equal_to_each_other_and_to_one_process(tmp_path):
  workdir = tmp_path / 'two'
  _finish(_start_two_processes(workdir, tmp_path))

  infos = [json.load(open(tmp_path / f'p{i}.npz.json')) for i in range(2)]
  assert [i['process_index'] for i in infos] == [0, 1]
  assert all(i['process_count'] == 2 for i in infos)
  assert [tuple(i['rows']) for i in infos] == [(0, 2), (1, 2)]  # (shard, of) halves
  p0, p1 = (dict(np.load(tmp_path / f'p{i}.npz')) for i in range(2))
  chex.assert_trees_all_equal(p0, p1)  # the replicated state is bitwise one state
  assert infos[0]['eval_history'] == infos[1]['eval_history']
  # Only process 0 writes metrics: each (step, metric) is logged once, not twice.
  records = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  logged = [(r['step'], name) for r in records for name in r if name != 'step']
  assert len(logged) == len(set(logged)) and any(n == 'train/loss' for _, n in logged)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '8']  # written together

  # One process, one device, the whole global batches: the same training run.
  single = _train(tmp_path / 'one', devices=jax.devices()[:1])
  expected = _flat({'params': single.state.params,
                    'model_state': dict(single.state.model_state)})
  # Two partial sums all-reduced vs. one sum: float32 order only.
  chex.assert_trees_all_close(p0, expected, rtol=1e-4, atol=1e-5)
  assert [e['count'] for e in infos[0]['eval_history']] == [40, 40]
  np.testing.assert_allclose(infos[0]['eval_history'][-1]['loss'],
                             single.final_eval['loss'], rtol=1e-4)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(tmp_path):
  """A scheduler's SIGTERM reaches process 1 only; JAX's preemption service makes both
  processes save at one agreed step and exit cleanly (no hang in the all-reduce);
  one process then resumes that checkpoint alone and finishes."""
  workdir = tmp_path / 'two'
  procs = _start_two_processes(workdir, tmp_path, '100')  # 400 steps
  deadline = time.time() + TIMEOUT_S
  try:
    while time.time() < deadline:
      assert all(p.poll() is None for p in procs), 'finished before the signal'
      if os.path.exists(workdir / 'metrics.jsonl') and os.path.getsize(
          workdir / 'metrics.jsonl') > 300:  # a few steps logged
        break
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
  finally:
    logs = _finish(procs)
  infos = [json.load(open(tmp_path / f'p{i}.npz.json')) for i in range(2)]
  assert all(i['preempted'] for i in infos), logs
  stopped_at = infos[0]['step']
  assert infos[1]['step'] == stopped_at < 400
  assert sorted(int(n) for n in os.listdir(workdir / 'checkpoints'))[-1] == stopped_at
  p0, p1 = (dict(np.load(tmp_path / f'p{i}.npz')) for i in range(2))
  chex.assert_trees_all_equal(p0, p1)

  resumed = _train(workdir, devices=jax.devices()[:1], num_epochs=100, log_every_steps=50,
                   eval_every_epochs=10_000)
  assert int(resumed.state.step) == 400 and not resumed.preempted


if __name__ == '__main__':
  _worker(*sys.argv[1:])
