"""Dense vs. convolutional networks on Fashion-MNIST: the project's main job.

Trains an MLP (dense layers only) and a CNN on the same data with the same budget
(epochs, batch size, optimizer, schedule) and writes into the workdir: report.md,
learning_curves.png, confusion_<model>.png, misclassified_<model>.png,
shift_robustness.png and cnn_filters.png.

Offline, on the four official IDX files:
  python -m experiments.dense_vs_conv --workdir=workdirs/dense_vs_conv \
      --config.data.source=fashion_mnist_idx \
      --config.data.data_dir=../shared/data/fashion_mnist
Online, TFDS downloads the data (the default source). Quick smoke run:
  python -m experiments.dense_vs_conv --config=experiments/dense_vs_conv.py:runlocal
Measured on a 2-core CPU (AMD EPYC, default config, idx source, 2026-11-25): 6.5 min for
the whole command; MLP 0.8981, CNN 0.9298 test accuracy on all 10,000 test images.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from data import pipeline
from data.sources import Source, build_source
from experiments import cli
from models import build_model
from train import distributed, run_record
from tasks.classification import analysis
from report import plots
from tasks.classification.task import classification_task
from train.loop import TrainResult, train_and_evaluate
from train.metric_writer import read_metrics

MODEL_NAMES = ('mlp', 'cnn')
SHIFTS = (0, 1, 2, 3, 4)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      source='fashion_mnist_tfds',  # or 'fashion_mnist_idx' with data_dir
      data_dir='',                  # idx: folder of the four official .gz files
      tfds_data_dir=ml_collections.FieldReference(None, field_type=str),
      manual_dir=ml_collections.FieldReference(None, field_type=str),
      mean=0.2860, std=0.3530,      # Fashion-MNIST training-set pixel statistics
  ))
  # The same budget for both models: epochs, batch size, optimizer and schedule.
  config.num_epochs = 10
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=2e-3, warmup_steps=200, weight_decay=5e-4))
  config.augment = ''  # an augmentation policy string (data.augment); '' = none
  config.compute_dtype = ''  # 'bfloat16': bf16 compute, float32 params and loss
  config.log_every_steps = 100
  config.progress_bar = True
  config.model_names = MODEL_NAMES  # which of config.models to train, in order
  config.models = ml_collections.ConfigDict(dict(
      mlp=dict(name='mlp', hidden_widths=(512, 256), dropout_rate=0.2),
      cnn=dict(name='cnn', widths=(32, 64), convs_per_block=1, dense_width=256,
               dropout_rate=0.3),
  ))
  if arg == 'runlocal':  # a smoke run: seconds, not minutes
    config.num_epochs = 1
    config.train_examples = 2048
    config.log_every_steps = 4
  else:
    config.train_examples = 0  # 0 = all 60,000
  return config


def _sources(config) -> tuple[Source, Source]:
  data_config = {k: v for k, v in config.data.items() if k not in ('mean', 'std')}
  train_source = build_source(data_config, 'train')
  test_source = build_source(data_config, 'test')
  if config.train_examples:
    train_source = Source(train_source.dataset.take(config.train_examples),
                          min(config.train_examples, train_source.num_examples),
                          train_source.class_names, train_source.image_shape)
  return train_source, test_source


def _augment_fn(policy: str):
  if not policy:
    return None
  from data import augment  # pylint: disable=g-import-not-at-top
  return augment.build_policy(policy)


def _numpy_split(source: Source) -> tuple[np.ndarray, np.ndarray]:
  batch = next(source.dataset.batch(source.num_examples).as_numpy_iterator())
  return batch['image'], batch['label']


def model_config(config, name: str) -> ml_collections.ConfigDict:
  """The config of one model's run: the shared budget and that model alone, so a change
  to the other model does not stop this one from resuming (train/run_record.py)."""
  narrowed = config.copy_and_resolve_references()
  with narrowed.unlocked():
    del narrowed['model_names']
    narrowed.models = ml_collections.ConfigDict({name: config.models[name].to_dict()})
  return narrowed


def train_model(config, name: str, workdir: str, train_source: Source,
                test_source: Source) -> TrainResult:
  model = build_model(config.models[name].to_dict(),
                      num_classes=len(train_source.class_names))
  mean, std = config.data.mean, config.data.std
  return train_and_evaluate(
      model_config(config, name), os.path.join(workdir, name), model=model,
      train_source=train_source, eval_source=test_source, task=classification_task(),
      augment_fn=_augment_fn(config.augment),
      preprocess_fn=lambda f: pipeline.normalize_image(f, mean, std))


def analyse(config, workdir: str, results: dict[str, TrainResult], test_source: Source
            ) -> dict[str, Any]:
  """Writes the figures; returns the numbers the report tables need."""
  images, labels = _numpy_split(test_source)
  class_names = list(test_source.class_names)
  mean, std = config.data.mean, config.data.std

  def normalize(x):
    return ((x.astype(np.float32) / 255.0) - mean) / std

  numbers: dict[str, Any] = {'shift': {}, 'confusion': {}}
  for name, result in results.items():
    logits = analysis.predict_logits(result.state, images, config.eval_batch_size, normalize)
    predictions = logits.argmax(-1)
    matrix = analysis.confusion_matrix(labels, predictions, len(class_names))
    numbers['confusion'][name] = matrix
    plots.confusion_matrix(os.path.join(workdir, f'confusion_{name}.png'), matrix,
                           class_names, f'{name.upper()}: Fashion-MNIST test confusion')
    wrong = np.flatnonzero(predictions != labels)[:32]
    plots.image_grid(os.path.join(workdir, f'misclassified_{name}.png'), images[wrong],
                     [f'{class_names[labels[i]]}\n-> {class_names[predictions[i]]}'
                      for i in wrong], f'{name.upper()}: misclassified test images '
                     '(true -> predicted)')
    numbers['shift'][name] = analysis.shift_accuracy(result.state, images, labels, SHIFTS,
                                                     normalize, config.eval_batch_size)
  plots.line_plot(os.path.join(workdir, 'shift_robustness.png'), SHIFTS,
                  {n: [numbers['shift'][n][s] for s in SHIFTS] for n in results},
                  'shift (pixels, mean of 4 directions)', 'test accuracy',
                  'Accuracy on translated test images')
  curves = {name: read_metrics(os.path.join(workdir, name)) for name in results}
  plots.learning_curves(os.path.join(workdir, 'learning_curves.png'), curves,
                        {n: r.steps_per_epoch for n, r in results.items()})
  if 'cnn' in results:
    kernel, maps = analysis.first_conv_maps(results['cnn'].state, normalize(images[0]))
    plots.filters_and_maps(os.path.join(workdir, 'cnn_filters.png'), images[0], kernel, maps)
  return numbers


def report_tables(config, results: dict[str, TrainResult], numbers: dict[str, Any],
                  class_names) -> str:
  lines = ['| model | test accuracy | test loss | parameters | training time (s) | '
           'training images/s | epochs | compile (s) |',
           '|---|---|---|---|---|---|---|---|']
  for name, r in results.items():
    final = r.final_eval
    lines.append(
        f'| {name.upper()} | {final["accuracy"]:.4f} | {final["loss"]:.4f} | '
        f'{r.num_params:,} | {r.train_seconds:.1f} | '
        f'{r.images_per_second(config.batch_size):,.0f} | {final["epoch"]} | '
        f'{r.compile_seconds:.1f} |')
  lines += ['', f'Evaluated on all {int(next(iter(results.values())).final_eval["count"]):,} '
            'test images.', '', '### Accuracy on shifted test images', '',
            '| shift (px) | ' + ' | '.join(n.upper() for n in results) + ' |',
            '|---|' + '---|' * len(results)]
  for s in SHIFTS:
    lines.append(f'| {s} | ' + ' | '.join(f'{numbers["shift"][n][s]:.4f}' for n in results)
                 + ' |')
  lines += ['', '### Per-class test accuracy', '',
            '| class | ' + ' | '.join(n.upper() for n in results) + ' |',
            '|---|' + '---|' * len(results)]
  for k, class_name in enumerate(class_names):
    accs = [numbers['confusion'][n][k, k] / numbers['confusion'][n][k].sum() for n in results]
    lines.append(f'| {class_name} | ' + ' | '.join(f'{a:.3f}' for a in accs) + ' |')
  note = ' '.join(run_record.changes_note(r.config_changes, f'{n.upper()}: ')
                  for n, r in results.items() if r.config_changes)
  return '\n'.join(lines + (['', note] if note else []))


def main(config: ml_collections.ConfigDict, workdir: str) -> dict[str, TrainResult]:
  for name in config.model_names:  # before training either model: no changed config
    run_record.check_workdir(model_config(config, name), os.path.join(workdir, name))
  os.makedirs(workdir, exist_ok=True)
  train_source, test_source = _sources(config)
  results = {name: train_model(config, name, workdir, train_source, test_source)
             for name in config.model_names}
  if any(r.preempted for r in results.values()):
    print('preempted: rerun the same command to resume from the last checkpoint.')
    return results
  if not distributed.is_main_process():
    return results  # every process trained; process 0 alone analyses and reports
  numbers = analyse(config, workdir, results, test_source)
  tables = report_tables(config, results, numbers, test_source.class_names)
  report = '\n'.join([
      '# Dense vs. convolutional networks on Fashion-MNIST', '',
      f'Data: `{config.data.source}`; budget per model: {config.num_epochs} epochs, batch '
      f'{config.batch_size}, {config.optimizer.name} lr {config.optimizer.learning_rate} '
      f'(warm-up + cosine); augmentation: `{config.augment or "none"}`.', '', tables, '',
      'The MLP gives every pixel its own weights, so a shifted garment lands on weights '
      'that never saw it; the CNN slides the same filters everywhere and pools, so its '
      'accuracy degrades far more slowly under translation.', '',
      '![learning curves](learning_curves.png)', '',
      '![shift robustness](shift_robustness.png)', '',
      *[f'![confusion {n}](confusion_{n}.png) ![misclassified {n}](misclassified_{n}.png)'
        for n in results],
      '', '![CNN first-layer filters and feature maps](cnn_filters.png)', ''])
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(report)
  print(tables)
  print(f'\nreport: {os.path.join(workdir, "report.md")}')
  return results


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/dense_vs_conv')
