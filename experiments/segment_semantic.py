"""Semantic segmentation with a U-Net: synthetic shapes by default, or CamVid.

Trains one U-Net with the one training loop and writes into the workdir: report.md
(metrics table, per-class IoU, IoU per evaluation), learning_curves.png and
overlays.png (validation images | ground truth | prediction).

Variants (`--config=experiments/segment_semantic.py:<variant>`):
  shapes (default)  64x64 synthetic shapes, 4 classes (background, circle, square,
                    triangle); validation from another seed stream. Target: mIoU >= 0.90
                    in <= 15 min on a 2-core CPU.
  camvid            ../shared/data/camvid_240x180, 11 classes (void ignored), trained
                    on 144x192 random crops, scored on the full 180x240 val images.
                    Target: val mIoU >= 0.45 from scratch in <= 30 min on 2 cores.
  runlocal          a smoke run on a few tiny synthetic images: seconds.
Commands:
  python -m experiments.segment_semantic --workdir=workdirs/segment_shapes
  python -m experiments.segment_semantic --config=experiments/segment_semantic.py:camvid \
      --workdir=workdirs/segment_camvid
Measured (2-core AMD EPYC CPU shared with other jobs, load 2-4, 2026-11-25): shapes
mIoU 0.9442 (background 0.995, circle 0.955, square 0.919, triangle 0.908) in 11.7 min
for the whole run. camvid (quiet machine): val mIoU 0.5284, pixel accuracy 0.808 (Sky
0.943, Building 0.478, Pole 0.037, Road 0.918, Pavement 0.761, Tree 0.828, SignSymbol
0.133, Fence 0.364, Car 0.514, Pedestrian 0.267, Bicyclist 0.570) in 25.3 min.
The binary experiment (experiments/segment_binary.py) shares `main`: a model with one
output channel makes the task binary (sigmoid, Dice reported).
"""
from __future__ import annotations

import dataclasses
import os
import time

import ml_collections
import numpy as np

from data import pipeline
from data.sources import Source, build_source
from experiments import cli
from models import build_model
from train import distributed, run_record
from tasks.classification import analysis
from tasks.segmentation import task as segmentation
from report import plots
from report import segmentation as segmentation_plots
from train.loop import TrainResult, train_and_evaluate
from train.metric_writer import read_metrics

_NOT_SOURCE_FIELDS = ('mean', 'std')


def base_config() -> ml_collections.ConfigDict:
  """Fields every segmentation variant has; variants override them."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      source='shapes', train_examples=4000, eval_examples=500, seed=0, image_size=(64, 64),
      max_instances=4, size_range=(0.12, 0.25), target='semantic', data_dir='',
      train_slices=24, mean=0.5, std=0.25))
  config.eval_split = 'val'
  config.train_repeats = 1  # a small training set repeated (each copy augmented anew)
  config.ignore_id = 255
  # Geometric ops move image and mask together; uncovered mask pixels get ignore_id.
  config.augment = 'flip_lr|rotate(10)|brightness(0.1)'
  config.model = ml_collections.ConfigDict(dict(
      name='unet', depth=3, base_width=16, norm='batch', dropout_rate=0.0,
      upsample='transpose'))
  config.loss = ml_collections.ConfigDict(dict(
      ce_weight=1.0, dice_weight=0.5,
      class_weights=''))  # '' = none, 'median_frequency', or a comma-separated list
  config.num_epochs = 10
  config.batch_size = 32
  config.eval_batch_size = 50
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=3e-3, warmup_steps=100, weight_decay=1e-4))
  config.compute_dtype = ''
  config.log_every_steps = 25
  config.eval_every_epochs = 1
  config.progress_bar = True
  config.num_overlays = 6
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'shapes'
  if variant not in ('shapes', 'camvid', 'runlocal'):
    raise ValueError(f'experiments/segment_semantic.py:{variant}: expected shapes, camvid '
                     'or runlocal.')
  config = base_config()
  if variant == 'camvid':
    config.data = ml_collections.ConfigDict(dict(
        source='camvid', data_dir='../shared/data/camvid_240x180',
        # () for class-id masks (this copy); a colour-coded copy: the RGB colour of each
        # class id, void last, e.g. --config.data.palette='((128, 128, 128), ...)'.
        palette=(), mean=(0.39, 0.41, 0.42), std=(0.30, 0.31, 0.30)))
    config.ignore_id = 11  # void
    config.augment = ('flip_lr|scale_crop(0.5, 1.0, 1.2, 1.45, size=(144, 192))'
                      '|brightness(0.15)|contrast(0.15)')
    config.model.depth = 4
    config.loss.class_weights = 'median_frequency'
    config.num_epochs = 40
    config.batch_size = 8
    config.eval_batch_size = 17
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 200
    config.log_every_steps = 20
    config.eval_every_epochs = 5
  elif variant == 'runlocal':
    config.data.train_examples = 64
    config.data.eval_examples = 12
    config.data.image_size = (32, 32)
    config.model.depth = 2
    config.model.base_width = 8
    config.num_epochs = 2
    config.batch_size = 16
    config.eval_batch_size = 8
    config.optimizer.warmup_steps = 2
    config.log_every_steps = 2
    config.num_overlays = 2
  return config


def sources(config) -> tuple[Source, Source]:
  data_config = {k: v for k, v in config.data.items() if k not in _NOT_SOURCE_FIELDS}
  train_source = build_source(data_config, 'train')
  eval_source = build_source(data_config, config.eval_split)
  if config.train_repeats > 1:
    train_source = dataclasses.replace(
        train_source, dataset=train_source.dataset.repeat(config.train_repeats),
        num_examples=train_source.num_examples * config.train_repeats)
  return train_source, eval_source


def _numpy_split(source: Source) -> tuple[np.ndarray, np.ndarray]:
  batch = next(source.dataset.batch(source.num_examples).as_numpy_iterator())
  return batch['image'], batch['mask']


def class_weights(config, train_source: Source) -> tuple[float, ...] | None:
  spec = config.loss.class_weights
  if not spec:
    return None
  if spec == 'median_frequency':
    _, masks = _numpy_split(train_source)
    return tuple(segmentation.median_frequency_weights(masks, len(train_source.class_names)))
  weights = tuple(float(w) for w in str(spec).split(','))
  if len(weights) != len(train_source.class_names):
    raise ValueError(f'config.loss.class_weights={spec!r}: {len(weights)} weights for '
                     f'{len(train_source.class_names)} classes {train_source.class_names}.')
  return weights


def is_binary(config) -> bool:
  return config.model.get('num_classes', 0) == 1


def augment_fn(config):
  if not config.augment:
    return None
  from data import augment  # pylint: disable=g-import-not-at-top
  return augment.build_policy(config.augment, fill={'mask': config.ignore_id})


def normalize(config):
  mean = np.asarray(config.data.mean, np.float32)
  std = np.asarray(config.data.std, np.float32)
  return lambda x: (x.astype(np.float32) / 255.0 - mean) / std


def check_ignore_id(config, class_names) -> None:
  """Geometric augmentation fills uncovered mask pixels with `config.ignore_id`: a class id
  there would train and score those pixels as that class, silently."""
  if config.augment and 0 <= config.ignore_id < len(class_names):
    raise ValueError(
        f'config.ignore_id={config.ignore_id} is the class id of '
        f'{class_names[config.ignore_id]!r}: the mask pixels that augmentation uncovers would '
        f'count as that class; use a value outside 0..{len(class_names) - 1} (e.g. 255).')


def train(config, workdir: str, train_source: Source, eval_source: Source,
          weights) -> TrainResult:
  check_ignore_id(config, train_source.class_names)
  num_classes = 1 if is_binary(config) else len(train_source.class_names)
  model = build_model({**config.model.to_dict(), 'num_classes': num_classes})
  mean, std = tuple(np.ravel(config.data.mean)), tuple(np.ravel(config.data.std))
  task = segmentation.segmentation_task(train_source.class_names, config.loss.ce_weight,
                                        config.loss.dice_weight, weights)
  return train_and_evaluate(
      config, workdir, model=model, train_source=train_source, eval_source=eval_source,
      task=task, augment_fn=augment_fn(config),
      preprocess_fn=lambda f: pipeline.normalize_image(f, mean, std))


def analyse(config, workdir: str, result: TrainResult, eval_source: Source) -> None:
  """Writes overlays.png and learning_curves.png."""
  count = min(config.num_overlays, eval_source.num_examples)
  images, masks = _numpy_split(dataclasses.replace(
      eval_source, dataset=eval_source.dataset.take(count), num_examples=count))
  logits = analysis.predict_logits(result.state, images, len(images), normalize(config))
  predictions = np.asarray(segmentation.predictions(logits))
  segmentation_plots.overlays(os.path.join(workdir, 'overlays.png'), images, masks,
                              predictions, eval_source.class_names,
                              f'{config.data.source} {config.eval_split}: ground truth '
                              'and prediction')
  metrics = read_metrics(workdir)
  plots.learning_curves(os.path.join(workdir, 'learning_curves.png'), {'': metrics},
                        {'': result.steps_per_epoch},
                        [m for m in ('train/loss', 'eval/loss', 'eval/miou', 'eval/dice')
                         if metrics.get(m)])


def report(config, result: TrainResult, wall_seconds: float, class_names, train_source,
           eval_source, weights) -> str:
  final = result.final_eval
  cpu = os.times()
  binary = len(class_names) == 2
  head = ['mIoU', 'pixel accuracy'] + (['Dice (F1) fg', 'precision', 'recall'] if binary
                                       else [])
  values = [final['miou'], final['pixel_accuracy']] + (
      [final['dice'], final['precision'], final['recall']] if binary else [])
  lines = [
      '| ' + ' | '.join(head) + ' | eval loss | parameters | epochs | training time (s) | '
      'training images/s | compile (s) | whole run (min) |',
      '|' + '---|' * (len(head) + 7),
      '| ' + ' | '.join(f'{v:.4f}' for v in values) + f' | {final["loss"]:.4f} | '
      f'{result.num_params:,} | {final["epoch"]} | {result.train_seconds:.1f} | '
      f'{result.images_per_second(config.batch_size):,.1f} | '
      f'{result.compile_seconds:.1f} | {wall_seconds / 60:.1f} |', '',
      f'Scored exactly on all {int(final["count"])} `{config.eval_split}` images (one '
      'confusion matrix over every counted pixel; ignore pixels excluded). Whole run: '
      f'{wall_seconds / 60:.1f} min wall, {cpu.user + cpu.system:,.0f} CPU seconds '
      f'(user + system) on {os.cpu_count()} cores.', '',
      '### Per-class IoU', '', '| class | IoU |' + (' Dice |' if binary else ''),
      '|---|---|' + ('---|' if binary else '')]
  for k, name in enumerate(class_names):
    dice = (final['dice'] if k == 1 else final[f'dice/{name}']) if binary else None
    lines.append(f'| {name} | {final[f"iou/{name}"]:.4f} |'
                 + (f' {dice:.4f} |' if binary else ''))
  lines += ['', '### During training', '', '| epoch | mIoU | pixel accuracy | eval loss |'
            + (' Dice |' if binary else ''), '|---|---|---|---|' + ('---|' if binary else '')]
  lines += [f'| {e["epoch"]} | {e["miou"]:.4f} | {e["pixel_accuracy"]:.4f} | '
            f'{e["loss"]:.4f} |' + (f' {e["dice"]:.4f} |' if binary else '')
            for e in result.eval_history]
  setup = (f'Data: `{config.data.source}`, {train_source.num_examples:,} training and '
           f'{eval_source.num_examples:,} `{config.eval_split}` images of '
           f'{tuple(eval_source.image_shape)}. Model: `{config.model.to_dict()}`. Loss: CE x '
           f'{config.loss.ce_weight} + soft Dice x {config.loss.dice_weight}, class weights '
           f'{"none" if weights is None else [round(float(w), 3) for w in weights]}. Augmentation: '
           f'`{config.augment or "none"}`. {config.optimizer.name} lr '
           f'{config.optimizer.learning_rate} (warm-up {config.optimizer.warmup_steps} + '
           f'cosine), batch {config.batch_size}.')
  note = run_record.changes_note(result.config_changes)
  setup += f' {note}' if note else ''
  return setup + '\n\n' + '\n'.join(lines)


def main(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  train_source, eval_source = sources(config)
  weights = class_weights(config, train_source)
  result = train(config, workdir, train_source, eval_source, weights)
  if result.preempted:
    print('preempted: rerun the same command to resume from the last checkpoint.')
    return result
  if not distributed.is_main_process():
    return result  # every process trained; process 0 alone analyses and reports
  analyse(config, workdir, result, eval_source)
  text = report(config, result, time.perf_counter() - start, eval_source.class_names,
                train_source, eval_source, weights)
  kind = 'Binary' if is_binary(config) else 'Semantic'
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write('\n'.join([f'# {kind} segmentation: U-Net on {config.data.source}', '', text, '',
                       '![learning curves](learning_curves.png)', '',
                       '![validation overlays](overlays.png)', '']))
  print(text)
  print(f'\nreport: {os.path.join(workdir, "report.md")}')
  return result


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/segment_semantic')
