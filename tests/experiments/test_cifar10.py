"""The CIFAR-10 experiment: configs, and one tiny end-to-end run whose report comes from
the final evaluation (FlipAveraged itself: tests/models/test_flip_averaged.py)."""
import os

import jax.numpy as jnp
import numpy as np
import pytest

from data import cifar10 as cifar10_data
from experiments import cifar10
from train.config_check import check_config
from train import distributed


def test_only_the_main_process_analyses_and_writes(tmp_path, monkeypatch):
  trained = type('Result', (), {'preempted': False})()
  monkeypatch.setattr(distributed, 'is_main_process', lambda: False)
  monkeypatch.setattr(cifar10, 'sources', lambda config: (None, None))
  monkeypatch.setattr(cifar10, 'train', lambda *args: trained)
  # A report would read the final evaluation: a TrainResult without one fails loudly.
  assert cifar10.main(cifar10.get_config('runlocal'), str(tmp_path)) is trained
  assert os.listdir(tmp_path) == []  # no report.md, no figures


def test_config_variants():
  for variant in ('cpu', 'gpu', 'runlocal'):
    config = cifar10.get_config(variant)
    assert config.label_smoothing == 0.2 and config.optimizer.name == 'nesterov'
    assert 'dtype' not in config.model
  assert cifar10.get_config('gpu').compute_dtype == 'bfloat16'
  assert cifar10.get_config('cpu').compute_dtype == ''  # float32
  # The recorded CPU results augment on the host; the accelerator recipe in the step.
  assert cifar10.get_config('cpu').augment_on == 'host'
  assert cifar10.get_config('gpu').augment_on == 'device'
  check_config(cifar10.get_config('gpu'))  # its policy has only device ops
  with pytest.raises(ValueError, match='cpu, gpu or runlocal'):
    cifar10.get_config('tpu')


def test_time_to_target_reads_training_seconds_of_the_first_good_eval():
  from benchmarks import cifar10_speed  # pylint: disable=g-import-not-at-top
  seconds_by_step = {10: 1.5, 20: 3.0, 30: 4.5}
  history = [{'step': 10, 'epoch': 1, 'accuracy': 0.5},
             {'step': 20, 'epoch': 2, 'accuracy': 0.95},
             {'step': 30, 'epoch': 3, 'accuracy': 0.96}]
  assert cifar10_speed.time_to_target(seconds_by_step, history, 0.94) == (3.0, 2)
  assert cifar10_speed.time_to_target(seconds_by_step, history, 0.99) is None


def test_tiny_end_to_end_run_writes_the_report(tmp_path):
  rng = np.random.default_rng(0)
  data_dir = tmp_path / 'data'
  os.makedirs(data_dir)
  for split, names in cifar10_data.SPLIT_FILES.items():
    for name in names:
      n = 16
      cifar10_data.write_batch_file(str(data_dir / name),
                                    rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                                    rng.integers(0, 10, n))
  config = cifar10.get_config('runlocal')
  config.data.source = 'cifar10_bin'
  config.data.data_dir = str(data_dir)
  config.train_examples = 0
  config.batch_size = 16
  config.eval_batch_size = 16
  config.progress_bar = False
  config.model.widths = (8, 8, 8)
  workdir = str(tmp_path / 'run')
  result = cifar10.main(config, workdir)
  assert result.steps_per_epoch == 5 and len(result.eval_history) == 1
  assert 0.0 <= result.final_eval['accuracy'] <= 1.0
  assert np.isfinite(result.final_eval['loss'])
  for name in ('report.md', 'learning_curves.png', 'confusion.png', 'misclassified.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
  final = result.final_eval
  matrix = np.asarray(final['confusion/matrix'])
  assert matrix.shape == (10, 10) and matrix.sum() == 16
  assert np.trace(matrix) / 16 == final['accuracy']  # the same predictions as the sums
  assert 0.0 <= final['no_tta/accuracy'] <= 1.0
  with open(os.path.join(workdir, 'report.md')) as f:
    report = f.read()
  assert 'CPU seconds' in report
  assert f'| {final["no_tta/accuracy"]:.4f} |' in report
  per_class = final['confusion/per_class_accuracy']
  assert f'| {cifar10_data.CLASS_NAMES[0]} | {per_class[0]:.3f} |' in report
  assert jnp.float32 == result.state.params['model']['Dense_0']['kernel'].dtype
