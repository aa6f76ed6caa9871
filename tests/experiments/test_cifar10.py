"""The CIFAR-10 experiment: flip averaging, configs, and one tiny end-to-end run."""
import os

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import cifar10 as cifar10_data
from experiments import cifar10
from train import distributed


class _Linear(nn.Module):
  """Not mirror-symmetric, so flip averaging changes its output."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_flip_averaging_only_in_evaluation():
  model = cifar10.FlipAveraged(_Linear())
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  inner = {'params': variables['params']['model']}
  plain = _Linear().apply(inner, x)
  mirrored = _Linear().apply(inner, x[:, :, ::-1])
  chex.assert_trees_all_close(model.apply(variables, x, train=False), (plain + mirrored) / 2,
                              atol=1e-6)
  chex.assert_trees_all_close(model.apply(variables, x, train=True), plain, atol=1e-6)
  off = cifar10.FlipAveraged(_Linear(), enabled=False)
  chex.assert_trees_all_close(off.apply(variables, x, train=False), plain, atol=1e-6)


def test_compute_dtype_reaches_the_wrapped_model():
  from train.loop import _with_compute_dtype  # pylint: disable=g-import-not-at-top
  config = cifar10.get_config('runlocal')
  config.model.widths = (8, 8, 8)
  model = cifar10.build_classifier(config, 10)
  bf16 = _with_compute_dtype(model, 'bfloat16')
  assert bf16.dtype == jnp.bfloat16 and bf16.model.dtype == jnp.bfloat16
  assert model.model.dtype == jnp.float32  # the original is left alone
  x = jnp.zeros((2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  # Same parameters (names, float32) for both; the convolutions run in bfloat16.
  chex.assert_trees_all_equal_structs(variables, bf16.init(jax.random.PRNGKey(0), x))

  def conv_dtypes(module):
    _, state = module.apply(variables, x, capture_intermediates=True)
    return {leaf.dtype for path, v in flax.traverse_util.flatten_dict(
        state['intermediates']).items() if 'Conv_0' in path
            for leaf in jax.tree_util.tree_leaves(v)}
  assert conv_dtypes(bf16) == {jnp.dtype(jnp.bfloat16)}
  assert conv_dtypes(model) == {jnp.dtype(jnp.float32)}


def test_only_the_main_process_analyses_and_writes(tmp_path, monkeypatch):
  trained = type('Result', (), {'preempted': False})()
  monkeypatch.setattr(distributed, 'is_main_process', lambda: False)
  monkeypatch.setattr(cifar10, 'sources', lambda config: (None, None))
  monkeypatch.setattr(cifar10, 'train', lambda *args: trained)

  def analyse(*args):
    raise AssertionError('analyse (figures) ran on a process other than 0')
  monkeypatch.setattr(cifar10, 'analyse', analyse)
  assert cifar10.main(cifar10.get_config('runlocal'), str(tmp_path)) is trained
  assert os.listdir(tmp_path) == []  # no report.md, no figures


def test_config_variants():
  for variant in ('cpu', 'gpu', 'runlocal'):
    config = cifar10.get_config(variant)
    assert config.label_smoothing == 0.2 and config.optimizer.name == 'nesterov'
  assert cifar10.get_config('gpu').model.dtype == 'bfloat16'
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
  with open(os.path.join(workdir, 'report.md')) as f:
    assert 'CPU seconds' in f.read()
  assert jnp.float32 == result.state.params['model']['Dense_0']['kernel'].dtype
