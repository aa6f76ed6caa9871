"""CIFAR-10: a fast, accurate CNN for everyday colour images.

The recipe of the speed records (airbench, David Page's ResNet-9): a plain wide
conv net with BatchNorm, flip + pad-and-crop augmentation, label smoothing 0.2,
SGD-Nesterov with warm-up + cosine decay, and test-time flip averaging (the logits
of an image and its mirror image are averaged). Writes into the workdir: report.md,
learning_curves.png, confusion.png, misclassified.png.

Variants (`--config=experiments/cifar10.py:<variant>`):
  cpu (default)  a small 32-64-128 net sized so that training, evaluation and JPEG
                 decoding fit in 30 minutes on 2 CPU cores.
  gpu            the airbench94 layout in bfloat16, batch 1024 (the 94% recipe).
  runlocal       a smoke run on 2,048 images: seconds.
On the JPEG copy of CIFAR-10 (offline, the default data):
  python -m experiments.cifar10 --workdir=workdirs/cifar10_cpu
Measured (cpu variant, 18 epochs, quiet 2-core AMD EPYC CPU, 2026-11-25): test accuracy
0.8594 with flip TTA (0.8501 without), 15.0 min for the whole run (training 814 s at
1,105 images/s; 0.85 first reached at epoch 16). Rerun with Eigen convolutions
(xla_cpu.py) on a quiet 2-core Intel Xeon, 2026-11-27: 0.8578 with flip TTA (0.8512
without), 17.9 min (training 744 s at 1,208 images/s). An earlier 14-epoch run on a heavily
shared machine: 0.8535 in 29.8 min. Rerun on the 2-core AMD EPYC, 2026-12-07 20:02 UTC
(a slow hour of that VM, jobs of ours beside it for ~6 of its minutes): 0.8596 with flip
TTA (0.8514 without) in 24.8 min (training 1,329 s). The fastnet's convolutions are
lax's (`nn.Conv`), not the project's CPU kernels (models/cpu_conv.py). With the official data:
`--config.data.source=cifar10_tfds` (downloads) or
`--config.data.source=cifar10_bin --config.data.data_dir=<cifar-10-batches-bin>`.
"""
from __future__ import annotations

import os

import flax.linen as nn
import ml_collections

from data import cifar10
from data.sources import Source
from experiments import cli, common
from models import build_model
from models.flip_averaged import FlipAveraged
from report import classification as figures
from report import plots
from report import tables
from tasks.classification.task import classification_task
from train import run_record
from train.loop import TrainResult, train_and_evaluate
from train.metric_writer import read_metrics

DEFAULT_DATA_DIR = '../shared/data/cifar10_jpeg'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  if variant not in ('cpu', 'gpu', 'runlocal'):
    raise ValueError(f'experiments/cifar10.py:{variant}: expected cpu, gpu or runlocal.')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      source='cifar10_folder',  # or cifar10_tfds, cifar10_bin
      data_dir=DEFAULT_DATA_DIR,
      tfds_data_dir=ml_collections.FieldReference(None, field_type=str),
      manual_dir=ml_collections.FieldReference(None, field_type=str)))
  config.preprocess = ml_collections.ConfigDict(dict(mean=cifar10.MEAN, std=cifar10.STD))
  # 0 = all 50,000; else a class-balanced subset (a seeded shuffle, then the first N).
  config.train_examples = 0
  config.label_smoothing = 0.2
  config.tta_flip = True
  config.log_every_steps = 50
  config.progress_bar = True
  config.eval_batch_size = 1000
  config.augment = 'flip_lr|pad_crop(2)'
  # 'host': tf.data on the CPU cores (the recorded results); 'device' in the jitted step
  # (data/augment_jax.py: other draws; for an accelerator; benchmarks/augment_on.py).
  config.augment_on = 'host'
  config.compute_dtype = ''  # '' = float32
  config.evals = ml_collections.ConfigDict(dict(
      confusion=dict(type='confusion', misclassified=32, misclassified_stride=97,
                     every_epochs=0),  # at the end only
      no_tta=dict(type='accuracy', model_fields=dict(enabled=False))))
  if variant == 'gpu':
    # airbench94's layout and budget; its 94% also relies on a frozen whitening
    # first layer and lookahead, which this loop does not have.
    config.model = ml_collections.ConfigDict(dict(name='airbench'))
    config.compute_dtype = 'bfloat16'
    # On an accelerator the step outruns the host: flip + pad-crop in tf.data ran at
    # ~7,700 images per CPU-second here, ~123k/s from 16 cores, below airbench's H100
    # bf16 step (212k/s; benchmarks/augment_on.py, issue 14). In the step it is free.
    config.augment_on = 'device'
    config.num_epochs = 16
    config.batch_size = 1024
    config.optimizer = ml_collections.ConfigDict(dict(
        name='nesterov', learning_rate=0.8, momentum=0.9, warmup_steps=200,
        weight_decay=5e-4, end_lr_fraction=0.0))
    config.eval_every_epochs = 1
  else:
    # Measured on 2 cores: pixels straight into the first conv (no full-resolution
    # stem) and average pooling (its gradient is far cheaper than max-pool's on XLA:CPU)
    # make this net ~3x faster than the same widths with a 24-channel stem.
    config.model = ml_collections.ConfigDict(dict(
        name='fastnet', stem_width=0, widths=(32, 64, 128), extra_convs=(1, 1, 1),
        pool='avg', activation='gelu', logit_scale=1 / 8))
    config.num_epochs = 18
    config.batch_size = 256
    config.optimizer = ml_collections.ConfigDict(dict(
        name='nesterov', learning_rate=0.2, momentum=0.9, warmup_steps=300,
        weight_decay=5e-4, end_lr_fraction=0.0))
    config.eval_every_epochs = 2
  if variant == 'runlocal':
    config.num_epochs = 1
    config.train_examples = 2048
    config.eval_every_epochs = 1
    config.log_every_steps = 2
  return config


def build_classifier(config, num_classes: int) -> nn.Module:
  """The configured model, wrapped for flip averaging when `config.tta_flip`."""
  return FlipAveraged(build_model(config.model.to_dict(), num_classes=num_classes),
                      enabled=config.tta_flip)


def sources(config) -> tuple[Source, Source]:
  # A class-balanced subset needs a shuffle first: the folder source is sorted by class.
  return common.sources(config, 'test', subset_seed=config.seed)


def train(config, workdir: str, train_source: Source, test_source: Source) -> TrainResult:
  return train_and_evaluate(
      config, workdir, model=build_classifier(config, len(train_source.class_names)),
      train_source=train_source, eval_source=test_source,
      task=classification_task(config.label_smoothing, **common.normalization(config)),
      **common.augment_fns(config))


def main(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
  clock = common.Clock()
  os.makedirs(workdir, exist_ok=True)
  train_source, test_source = sources(config)
  result = train(config, workdir, train_source, test_source)
  if not common.should_report(result):
    return result
  final, classes = result.final_eval, test_source.class_names  # stored in the checkpoints
  figures.evaluation_figures(workdir, final, common.first_examples(test_source)['image'],
                             classes, 'CIFAR-10')
  plots.learning_curves(os.path.join(workdir, 'learning_curves.png'),
                        {config.model.name: read_metrics(workdir)},
                        {config.model.name: result.steps_per_epoch})
  note = run_record.changes_note(result.config_changes)
  text = '\n'.join([
      *tables.markdown_table(*figures.runs_table(
          {config.model.name: result}, config.batch_size,
          {'without flip TTA': [f'{final["no_tta/accuracy"]:.4f}'],
           'whole run (min)': [f'{clock.wall_seconds / 60:.1f}']})),
      '', '### Test accuracy during training', '',
      *tables.history_table(result.eval_history, {'accuracy': 'accuracy', 'loss': 'loss'}),
      '', '### Per-class test accuracy', '', *tables.markdown_table(*figures.per_class_table(
          classes, {'accuracy': final['confusion/per_class_accuracy']})),
      *(['', note] if note else []), '', clock.summary()])
  print(text)
  data_name = 'CIFAR-10 (JPEG copy)' if config.data.source == 'cifar10_folder' else 'CIFAR-10'
  common.write_report(workdir, f'CIFAR-10: {config.model.name}', [
      f'Data: {data_name}, `{config.data.source}`, {train_source.num_examples:,} training '
      f'images, {test_source.num_examples:,} test images. Model: `{config.model.to_dict()}`.\n'
      f'Recipe: augmentation `{config.augment or "none"}`, label smoothing '
      f'{config.label_smoothing}, {config.optimizer.name} lr {config.optimizer.learning_rate} '
      f'(warm-up {config.optimizer.warmup_steps} steps + cosine), weight decay '
      f'{config.optimizer.weight_decay}, batch {config.batch_size}, compute dtype '
      f'{config.compute_dtype or "float32"}, flip TTA {config.tta_flip} (in the test '
      'accuracy). "Whole run" includes data decoding, compilation, evaluation and this '
      'report.', text, '![learning curves](learning_curves.png)',
      '![confusion](confusion.png)', '![misclassified](misclassified.png)'])
  return result


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/cifar10')
