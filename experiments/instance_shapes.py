"""Instance segmentation with a Mask R-CNN on synthetic shapes written as COCO JSON + PNG.

The shapes (data/shapes.py) are written once into `<workdir>/coco_shapes/` in the COCO
instances format and read back through the real COCO source (data/coco.py), so the
path exercised is the one COCO 2017 takes; validation images come from another seed
and split. After training, COCOeval (pycocotools) scores boxes and masks on the whole
validation set and `report.md` gets the full table, loss curves (`loss_curves.png`)
and validation images with predicted boxes, class names, scores and masks
(`detections.png`).

Variants (`--config=experiments/instance_shapes.py:<variant>`):
  shapes (default)  64x64 images, 1-4 shapes each (circle, square, triangle).
                    Target: box AP50 >= 0.80 and mask AP >= 0.50 in <= 45 min on a
                    2-core CPU.
  runlocal          a few tiny images and steps: a smoke run in about a minute.
Command:
  python -m experiments.instance_shapes --workdir=workdirs/instance_shapes
Measured (2-core AMD EPYC CPU, quiet, 2026-11-25; default config, 18 epochs of 4,000
images, scored on 500 images of another seed): box AP 0.828, AP50 0.958, AP75 0.904;
mask AP 0.913, AP50 0.957, AP75 0.927; 37.0 training images/s; whole run 37.3 min.
"""
from __future__ import annotations

import json
import os
import time

import ml_collections

from data import shapes
from data.sources import Source, build_source
from experiments import cli
from models import build_model
from train import distributed, run_record
from tasks.instance import coco_eval
from tasks.instance import evaluation as instance_eval
from tasks.instance import task as instance_loss
from report import plots
from report import instance as instance_plots
from train.loop import TrainResult, train_and_evaluate
from train.metric_writer import read_metrics

_NOT_SOURCE_FIELDS = ('mean', 'std', 'synthetic')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'shapes'
  if variant not in ('shapes', 'runlocal'):
    raise ValueError(f'experiments/instance_shapes.py:{variant}: expected shapes or runlocal.')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      source='coco_json', data_dir='', image_size=(64, 64), max_instances=4,
      mean=0.5, std=0.25,
      # What data/shapes.py writes when data_dir is empty: <workdir>/coco_shapes.
      synthetic=dict(train_examples=4000, val_examples=500, seed=0, val_seed=1,
                     max_instances=4, size_range=(0.12, 0.25))))
  config.eval_split = 'val'
  config.augment = 'flip_lr|brightness(0.1)'
  # Second-stage sizes for images with at most 4 objects: the box and mask heads on
  # RoIs dominate the step time on a CPU (64 RoIs and 16 masks per image were 3.7x
  # slower than 32 and 8).
  config.model = ml_collections.ConfigDict(dict(
      name='mask_rcnn', num_rois=32, num_mask_rois=8, fc_width=128, mask_head_width=32))
  config.loss_weights = ml_collections.ConfigDict(
      {name: 1.0 for name in instance_loss.LOSS_TERMS})
  config.num_epochs = 18
  config.batch_size = 16
  config.eval_batch_size = 50
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=2e-3, warmup_steps=200, weight_decay=1e-4,
      grad_clip_norm=10.0))
  config.shuffle_buffer = 10_000
  config.log_every_steps = 25
  config.eval_every_epochs = 6
  config.progress_bar = True
  config.num_shown = 8
  if variant == 'runlocal':
    config.data.synthetic.update(train_examples=32, val_examples=8)
    config.model.update(stage_widths=(16, 32, 64), fpn_width=32, fc_width=64,
                        mask_head_width=32)
    config.num_epochs = 2
    config.batch_size = 8
    config.eval_batch_size = 8
    config.optimizer.warmup_steps = 2
    config.log_every_steps = 2
    config.eval_every_epochs = 1
    config.num_shown = 4
  return config


def write_synthetic(config, workdir: str) -> str:
  """Writes the shapes splits as COCO JSON + PNG once; returns the data directory."""
  directory = os.path.join(workdir, 'coco_shapes')
  synthetic = config.data.synthetic
  kwargs = dict(image_size=tuple(config.data.image_size),
                max_instances=synthetic.max_instances, size_range=tuple(synthetic.size_range))
  for split, count, seed in (('train', synthetic.train_examples, synthetic.seed),
                             ('val', synthetic.val_examples, synthetic.val_seed)):
    json_path = os.path.join(directory, 'annotations', f'instances_{split}.json')
    if not os.path.exists(json_path):  # written atomically last: a complete split
      shapes.write_coco(directory, count, seed=seed, split=split, **kwargs)
  return directory


def sources(config, workdir: str) -> tuple[Source, Source]:
  data_config = {k: v for k, v in config.data.items() if k not in _NOT_SOURCE_FIELDS}
  if not data_config['data_dir']:
    data_config['data_dir'] = write_synthetic(config, workdir)
  return build_source(data_config, 'train'), build_source(data_config, config.eval_split)


def augment_fn(config):
  if not config.augment:
    return None
  from data import augment  # pylint: disable=g-import-not-at-top
  # 'invalidate' keeps the padded instance count static (a dropped instance is flagged).
  return augment.build_policy(config.augment, drop_mode='invalidate')


def init_fn(config):
  """With `config.init_from` (a torchvision ResNet-50 .pth / .safetensors): a function
  putting those ImageNet weights into the R50-FPN backbone's trunk at state creation."""
  path = config.get('init_from', '')
  if not path:
    return None
  from models import import_torchvision  # pylint: disable=g-import-not-at-top
  return lambda variables: import_torchvision.load_resnet50(variables, path,
                                                            at=('backbone', 'trunk'))


def build(config, train_source: Source):
  model = build_model({**config.model.to_dict(),
                       'num_classes': len(train_source.class_names) - 1})
  weights = config.loss_weights.to_dict()
  if not train_source.metadata.get('has_masks', True):
    # TFDS coco/2017 has boxes but no masks (data/coco_tfds.py): train the detector only.
    weights['mask'] = 0.0
  task = instance_loss.instance_task(config.data.mean, config.data.std, weights)
  return model, task


def report(config, workdir: str, result: TrainResult, coco: dict, wall_seconds: float,
           train_source: Source, eval_source: Source) -> str:
  cpu = os.times()
  last = result.final_eval
  lines = [
      coco_eval.format_table(coco['metrics']), '',
      f'COCOeval (pycocotools) on all {eval_source.num_examples} `{config.eval_split}` '
      f'images, {coco["num_results"]} detections, category ids as in the annotation file. '
      f'In-loop check at the end: recall50 {last.get("recall50", float("nan")):.3f}, '
      f'precision50 {last.get("precision50", float("nan")):.3f}.', '']
  if 'ceiling' in coco:
    ceiling = coco['ceiling']
    lines += [
        f'Ceiling at {tuple(config.data.image_size)}: the annotations themselves, resized '
        'by the source and mapped back, score box AP '
        f'{ceiling["bbox"]["AP"]:.3f} and mask AP {ceiling["segm"]["AP"]:.3f} (mask AP50 '
        f'{ceiling["segm"]["AP50"]:.3f}); a perfect model at this image size scores no '
        'more.', '']
  lines += [
      '| parameters | epochs | training time (s) | training images/s | compile (s) | '
      'whole run (min) | CPU seconds |', '|---|---|---|---|---|---|---|',
      f'| {result.num_params:,} | {config.num_epochs} | {result.train_seconds:.1f} | '
      f'{result.images_per_second(config.batch_size):,.1f} | '
      f'{result.compile_seconds:.1f} | {wall_seconds / 60:.1f} | '
      f'{cpu.user + cpu.system:,.0f} on {os.cpu_count()} cores |', '']
  series = read_metrics(workdir)
  lines += ['### Training loss terms (mean of the first and last logging interval)', '',
            '| term | first | last |', '|---|---|---|']
  for name in ('loss',) + instance_loss.LOSS_TERMS:
    points = series.get(f'train/{name}', [])
    if points:
      lines.append(f'| {name} | {points[0][1]:.4f} | {points[-1][1]:.4f} |')
  lines.append('')
  per_category = coco['per_category_ap']
  if per_category:
    names = list(next(iter(per_category.values())))
    lines += ['### AP per category', '', '| | ' + ' | '.join(names) + ' |',
              '|---' * (len(names) + 1) + '|']
    lines += [f'| {iou_type} | ' + ' | '.join(
        'n/a' if aps[n] < 0 else f'{100 * aps[n]:.1f}' for n in names) + ' |'
              for iou_type, aps in per_category.items()]
    lines.append('')
  for iou_type, summary in coco['summaries'].items():
    lines += [f'### COCOeval {iou_type}', '', '```', summary.rstrip(), '```', '']
  setup = (f'Data: `{config.data.source}`, {train_source.num_examples:,} training and '
           f'{eval_source.num_examples:,} `{config.eval_split}` images of '
           f'{tuple(eval_source.image_shape)}, classes {list(train_source.class_names[1:])}. '
           f'Model: `{config.model.to_dict()}`. Augmentation: `{config.augment or "none"}`. '
           f'{config.optimizer.name} lr {config.optimizer.learning_rate}, batch '
           f'{config.batch_size}.')
  note = run_record.changes_note(result.config_changes)
  setup += f' {note}' if note else ''
  return setup + '\n\n' + '\n'.join(lines)


def main(config: ml_collections.ConfigDict, workdir: str, title: str = 'synthetic shapes'
         ) -> TrainResult:
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  train_source, eval_source = sources(config, workdir)
  model, task = build(config, train_source)
  result = train_and_evaluate(config, workdir, model=model, train_source=train_source,
                              eval_source=eval_source, task=task,
                              augment_fn=augment_fn(config), init_fn=init_fn(config))
  if result.preempted:
    print('preempted: rerun the same command to resume from the last checkpoint.')
    return result
  if not distributed.is_main_process():
    return result
  predictions = instance_eval.predict_source(result.state, eval_source,
                                             batch_size=config.eval_batch_size,
                                             inputs_fn=task.inputs_fn)
  coco = instance_eval.coco_metrics(predictions, eval_source)
  if eval_source.metadata.get('has_masks', True):
    coco['ceiling'] = instance_eval.resize_ceiling(eval_source)
  shown = slice(0, min(config.num_shown, eval_source.num_examples))
  truth = next(eval_source.dataset.batch(shown.stop).as_numpy_iterator())
  instance_plots.detections_grid(
      os.path.join(workdir, 'detections.png'), truth['image'], truth,
      {k: predictions[k][shown] for k in instance_eval.DETECTION_KEYS},
      eval_source.class_names, f'Mask R-CNN on {title}: {config.eval_split} images')
  plots.learning_curves(
      os.path.join(workdir, 'loss_curves.png'), {'': read_metrics(workdir)},
      {'': result.steps_per_epoch},
      [[f'train/{t}' for t in ('loss',) + instance_loss.LOSS_TERMS],
       ['eval/recall50', 'eval/precision50']],
      titles=['training loss terms', 'validation (score >= 0.5, IoU >= 0.5)'], log_scale=[0])
  text = report(config, workdir, result, coco, time.perf_counter() - start, train_source,
                eval_source)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write('\n'.join([f'# Instance segmentation: Mask R-CNN on {title}', '', text, '',
                       '![loss curves](loss_curves.png)', '',
                       '![detections](detections.png)', '']))
  print(text)
  print(f'\nreport: {os.path.join(workdir, "report.md")}')
  with open(os.path.join(workdir, 'coco_metrics.json'), 'w') as f:
    json.dump({k: coco[k] for k in ('metrics', 'per_category_ap', 'ceiling') if k in coco}, f,
              indent=1)
  return result


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/instance_shapes')
