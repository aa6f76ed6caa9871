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
0.133, Fence 0.364, Car 0.514, Pedestrian 0.267, Bicyclist 0.570) in 25.3 min. Rerun
with Eigen convolutions (xla_cpu.py) on a 2-core Intel Xeon, 2026-11-27 (stopped at step
120 and resumed): val mIoU 0.5208, pixel accuracy 0.805 (Car 0.468, Fence 0.335, Pole
0.048, SignSymbol 0.149); no timing (it shared the CPU at first). Rerun with the U-Net
on the compiled kernels and the matrix-product upsampling (same Xeon, 2026-11-27, other
jobs of ours beside it at first): camvid val mIoU 0.5184, pixel accuracy 0.797 (Building
0.444, Car 0.575, Fence 0.289, Pole 0.045, Pedestrian 0.193) in 19.8 min, and with
`--config.seed=1` 0.5369 (pixel accuracy 0.818) in 20.0 min: a seed's spread; shapes mIoU
0.9461 (circle 0.955, square 0.921, triangle 0.914) in 5.3 min (quiet). Rerun with
BatchNorm's custom CPU gradient (models/batch_norm.py; same Xeon, 2026-11-27 afternoon,
one run after another, load ~1.8): camvid val mIoU 0.5406, pixel accuracy 0.819
(Building 0.520, Car 0.582, Fence 0.338, Pole 0.037, Pedestrian 0.231) in 17.6 min
(training 975 s), a seed's spread above the last rerun; shapes mIoU 0.9415 in 5.0 min, and
0.9427 with `--config.seed=1` (0.0046 and 0.0034 below the last rerun, whose own
rounding-level change had moved it +0.0019: read a few thousandths as this run's noise).
Rerun with BatchNorm's passes as compiled kernels (statistics summed in double:
models/conv_kernels/batch_norm.cc; same Xeon, 2026-11-27 evening, quiet): camvid val
mIoU 0.5202, pixel accuracy 0.796 (Building 0.471, Car 0.584, Fence 0.303, Pole 0.040,
Pedestrian 0.233) in 14.1 min (training 770 s against 975 s): 0.020 below the last
rerun, within the seeds' spread above; shapes mIoU 0.9457 (beside benchmarks of ours).
Rerun with Winograd's 3x3 kernel (models/conv_kernels/winograd.cc) on a 2-core AMD EPYC
(AVX2), 2026-12-07 20:28 UTC (a slow hour, ~4 min of it beside jobs of ours): camvid val
mIoU 0.5355, pixel accuracy 0.815 (Building 0.491, Car 0.554, Fence 0.298, Pole 0.051,
Pedestrian 0.265) in 26.4 min (training 1,431 s), within the seeds' spread above.
Rerun with Winograd's weight gradient (models/conv_kernels/winograd_weight_grad.cc) on
the 2-core Intel Xeon (AVX-512), 2026-12-07 22:37 UTC, quiet: camvid val mIoU 0.5262,
pixel accuracy 0.805 (Building 0.487, Car 0.552, Fence 0.282, Pole 0.048, Pedestrian
0.246) in 11.6 min (training 625 s against 770 s on 2026-11-27), within the spread above.
The binary experiment (experiments/segment_binary.py) shares `main`: a model with one
output channel makes the task binary (sigmoid, Dice reported). The task's exact sums
score every evaluation (tasks/segmentation/); the report is drawn by report/segmentation.py.
"""
from __future__ import annotations

import os

import ml_collections

from experiments import cli, common
from models import build_model
from report import segmentation as report
from report import tables
from tasks.segmentation import analysis
from tasks.segmentation import task as segmentation
from train.loop import TrainResult, train_and_evaluate
from train.metric_writer import read_metrics


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'shapes'
  if variant not in ('shapes', 'camvid', 'runlocal'):
    raise ValueError(f'experiments/segment_semantic.py:{variant}: expected shapes, camvid '
                     'or runlocal.')
  config = ml_collections.ConfigDict(dict(
      seed=0, eval_split='val', ignore_id=255, compute_dtype='', num_epochs=10,
      batch_size=32, eval_batch_size=50, log_every_steps=25, eval_every_epochs=1,
      progress_bar=True, num_overlays=6,
      train_repeats=1,  # a small training set repeated (each copy augmented anew)
      # Geometric ops move image and mask together; uncovered mask pixels get ignore_id.
      augment='flip_lr|rotate(10)|brightness(0.1)',
      # 'host': tf.data on the CPU cores (the recorded results); 'device' in the jitted
      # step (data/augment_jax.py: other draws; for an accelerator; benchmarks/augment_on.py).
      augment_on='host'))
  config.data = ml_collections.ConfigDict(dict(
      source='shapes', train_examples=4000, eval_examples=500, seed=0, image_size=(64, 64),
      max_instances=4, size_range=(0.12, 0.25), target='semantic'))
  config.preprocess = ml_collections.ConfigDict(dict(mean=0.5, std=0.25))
  config.model = ml_collections.ConfigDict(dict(
      name='unet', depth=3, base_width=16, norm='batch', dropout_rate=0.0,
      upsample='transpose'))
  config.loss = ml_collections.ConfigDict(dict(
      ce_weight=1.0, dice_weight=0.5,
      class_weights=''))  # '' = none, 'median_frequency', or a comma-separated list
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=3e-3, warmup_steps=100, weight_decay=1e-4))
  if variant == 'camvid':
    # palette: () for class-id masks (this copy); a colour-coded copy: the RGB colour of
    # each class id, void last, e.g. --config.data.palette='((128, 128, 128), ...)'.
    config.data = ml_collections.ConfigDict(dict(
        source='camvid', data_dir='../shared/data/camvid_240x180', palette=()))
    config.preprocess = ml_collections.ConfigDict(dict(mean=(0.39, 0.41, 0.42),
                                                       std=(0.30, 0.31, 0.30)))
    config.augment = ('flip_lr|scale_crop(0.5, 1.0, 1.2, 1.45, size=(144, 192))'
                      '|brightness(0.15)|contrast(0.15)')
    config.update(dict(ignore_id=11, num_epochs=40, batch_size=8, eval_batch_size=17,
                       log_every_steps=20, eval_every_epochs=5))  # ignore_id 11: void
    config.model.depth = 4
    config.loss.class_weights = 'median_frequency'
    config.optimizer.update(dict(learning_rate=2e-3, warmup_steps=200))
  elif variant == 'runlocal':
    config.data.update(dict(train_examples=64, eval_examples=12, image_size=(32, 32)))
    config.model.update(dict(depth=2, base_width=8))
    config.update(dict(num_epochs=2, batch_size=16, eval_batch_size=8, log_every_steps=2,
                       num_overlays=2))
    config.optimizer.warmup_steps = 2
  return config


def main(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
  clock = common.Clock()
  os.makedirs(workdir, exist_ok=True)
  train_source, eval_source = common.sources(config, config.eval_split)
  class_names = train_source.class_names
  analysis.check_ignore_id(config.ignore_id, config.augment, class_names)
  weights = analysis.class_weights(config.loss.class_weights, train_source)
  binary = config.model.get('num_classes', 0) == 1
  task = segmentation.segmentation_task(class_names, config.loss.ce_weight,
                                        config.loss.dice_weight, weights,
                                        **common.normalization(config))
  model = build_model({**config.model.to_dict(),
                       'num_classes': 1 if binary else len(class_names)})
  result = train_and_evaluate(
      config, workdir, model=model, train_source=train_source, eval_source=eval_source,
      task=task, **common.augment_fns(config, {'mask': config.ignore_id}))
  if not common.should_report(result):
    return result
  shown = common.first_examples(eval_source, config.num_overlays)
  predicted = analysis.predict_masks(result.state, shown['image'],
                                     batch_size=len(shown['image']), inputs_fn=task.inputs_fn)
  report.overlays(os.path.join(workdir, 'overlays.png'), shown['image'], shown['mask'],
                  predicted, class_names,
                  f'{config.data.source} {config.eval_split}: ground truth and prediction')
  report.learning_curves(os.path.join(workdir, 'learning_curves.png'), read_metrics(workdir),
                         result.steps_per_epoch)
  final = result.final_eval

  def table(header_rows) -> str:
    return '\n'.join(tables.markdown_table(*header_rows))
  sections = [
      report.setup(config, train_source, eval_source, weights, result.config_changes),
      table(report.summary(result, binary, config.batch_size, clock.wall_seconds)),
      f'Scored exactly on all {int(final["count"])} `{config.eval_split}` images (one '
      'confusion matrix over every counted pixel; ignore pixels excluded). ' + clock.summary(),
      '### Per-class IoU\n\n' + table(report.per_class(final, class_names, binary)),
      '### During training\n\n' + '\n'.join(tables.history_table(
          result.eval_history, report.history_columns(binary)))]
  print('\n\n'.join(sections))
  common.write_report(
      workdir, f'{"Binary" if binary else "Semantic"} segmentation: U-Net on '
      f'{config.data.source}', sections + ['![learning curves](learning_curves.png)',
                                          '![validation overlays](overlays.png)'])
  return result


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/segment_semantic')
