"""Each process decodes only its own examples (issue 14): shard and skip before decoding.

The source is a COCO-format folder (data/coco.py, records = image indices) whose decode
is wrapped to append every decoded index to a file. Two processes joined through
`jax.distributed` on loopback each run one epoch with num_shards=jax.process_count(),
shard_index=jax.process_index(); one process resumes mid-epoch. Run as a script, this
file is the worker: `python tests/data/test_decode_per_process.py DATA_DIR OUT_PREFIX`.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # run as a script
  sys.path.insert(0, REPO)

from data import pipeline, shapes  # noqa: E402
from data.sources import build_source  # noqa: E402
from tests.train.test_distributed import _finish, _free_port  # noqa: E402

NUM_EXAMPLES, BATCH_SIZE = 24, 8
TIMEOUT_S = 300


def _source(data_dir):
  return build_source({'source': 'coco_json', 'data_dir': data_dir, 'image_size': (32, 32),
                       'max_instances': 8}, 'train')


def counting_decode(decode, log_path):
  """`decode`, appending each decoded record's index to `log_path` (one a line)."""
  def log(index):
    with open(log_path, 'a') as f:
      f.write(f'{int(index)}\n')
    return index

  def wrapped(record):
    # The decode takes the logged index: it cannot run without the log.
    return decode({'index': tf.numpy_function(log, [record['index']], tf.int64)})
  return wrapped


def run_epoch(data_dir, log_path, **kwargs):
  """The image ids of one epoch's batches, decoded through counting_decode."""
  source = _source(data_dir)
  batches = pipeline.train_batches(
      source.records, batch_size=BATCH_SIZE, seed=2, epoch=1,
      decode_fn=counting_decode(source.decode, log_path), **kwargs)
  return [b['image_id'].tolist() for b in pipeline.as_numpy(batches)]


def _decoded(log_path):
  with open(log_path) as f:
    return [int(line) for line in f]


def _worker(data_dir, out_prefix):
  import jax  # pylint: disable=g-import-not-at-top
  from train import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.initialize()  # from the REDCONV_* variables
  ids = run_epoch(data_dir, out_prefix + '.log', num_shards=jax.process_count(),
                  shard_index=jax.process_index())
  with open(out_prefix + '.json', 'w') as f:
    json.dump({'process_index': jax.process_index(), 'process_count': jax.process_count(),
               'batches': ids}, f)


@pytest.fixture(scope='module')
def coco_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('coco'))
  shapes.write_coco(root, NUM_EXAMPLES, seed=1)
  return root


def _image_ids(data_dir):
  return [int(i) for i in _source(data_dir).dataset.map(lambda f: f['image_id'])]


@pytest.mark.slow  # two processes start JAX and TensorFlow: 18 s, 83 s at load 8 (2 cores)
def test_two_processes_each_decode_only_their_shard(coco_dir, tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=1',
             REDCONV_COORDINATOR=f'127.0.0.1:{_free_port()}', REDCONV_NUM_PROCESSES='2')
  procs = [subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), coco_dir, str(tmp_path / f'p{i}')],
      env=dict(env, REDCONV_PROCESS_ID=str(i)), cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  _finish(procs)
  infos = [json.load(open(tmp_path / f'p{i}.json')) for i in range(2)]
  assert [(i['process_index'], i['process_count']) for i in infos] == [(0, 2), (1, 2)]
  image_ids = _image_ids(coco_dir)  # index -> image id
  decoded = [_decoded(tmp_path / f'p{i}.log') for i in range(2)]
  for info, indices in zip(infos, decoded):
    # Exactly its shard: half the epoch, each once, the very examples it yields.
    assert len(indices) == len(set(indices)) == NUM_EXAMPLES // 2
    yielded = [i for batch in info['batches'] for i in batch]
    assert sorted(image_ids[i] for i in indices) == sorted(yielded)
    assert [len(b) for b in info['batches']] == [BATCH_SIZE // 2] * (NUM_EXAMPLES // BATCH_SIZE)
  assert sorted(decoded[0] + decoded[1]) == list(range(NUM_EXAMPLES))  # all, each once
  # Together the two halves are the one-process global batches, in order.
  whole = run_epoch(coco_dir, str(tmp_path / 'one.log'))
  assert [a + b for a, b in zip(infos[0]['batches'], infos[1]['batches'])] == whole


def test_a_mid_epoch_resume_decodes_only_the_remaining_examples(coco_dir, tmp_path):
  whole = run_epoch(coco_dir, str(tmp_path / 'whole.log'))
  resumed = run_epoch(coco_dir, str(tmp_path / 'resumed.log'), skip_batches=2)
  assert resumed == whole[2:]
  image_ids = _image_ids(coco_dir)
  decoded = _decoded(tmp_path / 'resumed.log')
  assert len(decoded) == len(set(decoded)) == (NUM_EXAMPLES // BATCH_SIZE - 2) * BATCH_SIZE
  assert sorted(image_ids[i] for i in decoded) == sorted(np.ravel(whole[2:]).tolist())
  assert len(_decoded(tmp_path / 'whole.log')) == NUM_EXAMPLES


if __name__ == '__main__':
  _worker(*sys.argv[1:])
