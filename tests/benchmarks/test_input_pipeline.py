"""benchmarks/input_pipeline.py measures the experiment's real input path: whole epochs
of exactly the batches the loop would pull, per pinned core count."""
import os

from benchmarks import input_pipeline
from tests.conftest import shared_data_path


def test_worker_pulls_whole_epochs_of_the_experiments_batches_and_restores_affinity():
  shared_data_path('fashion_mnist')
  cpus = os.sched_getaffinity(0)
  result = input_pipeline.measure('mlp', cap=300, epochs=1, core_counts=[1])
  assert os.sched_getaffinity(0) == cpus
  # dense_vs_conv's batch 128: the incomplete last batch of the 300 is dropped.
  assert (result['examples'], result['images'], result['batch_size']) == (300, 256, 128)
  assert result['source'] == 'fashion_mnist_idx' and result['augment'] == ''
  one = result['cores']['1']
  assert len(one['all_per_s']) == 2 and one['per_s'] > 0 and one['per_cpu_s'] > 0


def test_row_says_whether_one_core_feeds_the_h100_rate():
  core = {'epoch0_per_s': 10.0, 'per_s': 50.0, 'per_cpu_s': 60.0, 'load_1min': 1.0}
  result = {'source': 'camvid', 'examples': 8, 'augment': 'flip_lr|brightness(0.1)',
            'cores': {'1': core, '2': core}, 'build_s': 1.0, 'peak_rss_mib': 100.0}
  cells = input_pipeline.row('unet_camvid', result)   # H100 bf16: 1,800 -> 112.5 per core
  assert len(cells) == len(input_pipeline.HEADERS)
  assert cells[-2].startswith('no (0.53x)') and cells[-3] == '112'
  assert '\\|' in cells[2]  # a policy's | would split the markdown cell
