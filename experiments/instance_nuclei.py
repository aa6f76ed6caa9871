"""Mask R-CNN from scratch on real microscopy: nuclei of the 2018 Data Science Bowl.

Data: ../shared/data/nuclei_dsb2018 through data/instance_labels.py (images + 16-bit
instance-id label PNGs, the fixed 345 / 86 train / val split), resized to fit 256 x 256
(the 360 x 360 and larger images are downscaled) and padded. The model trains in
stretches of `ap_every_epochs` (train_with_curve) and COCOeval scores every val image
after each, in the original image pixels, with params.maxDets = [1, 100, 400]. The same
COCOeval scores a classical baseline on the original val images: Otsu threshold +
connected components (models/classical.py). `report.md` holds both rows side by side,
the AP by epoch (`ap_by_epoch.png`), overlays of ground truth and both methods on the
same val images (`overlays.png`) and the Mask R-CNN details of instance_shapes' report.

Variants: `nuclei` (default; target: val mask AP >= 0.45 and AP50 >= 0.75 in <= 45 min
on a 2-core CPU, above the classical row), `runlocal` (64 x 64, 2 epochs: a smoke run).
Command:
  python -m experiments.instance_nuclei --workdir=workdirs/instance_nuclei
Measured (2-core AMD EPYC CPU shared with other jobs, load average 6.0 at the start,
8-11 during, 4.7 at the end; 2026-11-26; default config, 16 epochs, 2,364,854
parameters): Mask R-CNN segm AP 0.588, AP50 0.869, bbox AP 0.542, AP50 0.872;
classical segm AP 0.383, AP50 0.621, bbox AP 0.407, AP50 0.627; segm AP by epoch 4 /
8 / 12 / 16: 0.499 / 0.558 / 0.585 / 0.588; 3.6 training images/s; whole command
37.7 min (peak RSS 7.8 GB); no instance dropped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import ml_collections
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from data.coco import nearest_indices
from data.sources import Source, build_source
from experiments import cli, instance_shapes
from models import classical
from train import distributed
from tasks.instance import evaluation as instance_eval
from tasks.instance import task as instance_loss
from report import plots
from report import instance as instance_plots
from train.loop import train_and_evaluate
from train.metric_writer import read_metrics


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'nuclei'
  if variant not in ('nuclei', 'runlocal'):
    raise ValueError(f'experiments/instance_nuclei.py:{variant}: expected nuclei or runlocal.')
  config = instance_shapes.get_config('shapes')
  # Dim fluorescence images (train pixels: mean 0.048, std 0.064 of full range); the
  # three colour channels are equal. The static instance cap is above the most nuclei
  # on one image (131 in train, 91 in val), so none is dropped; not far above, because
  # every instance is a dense [H, W] mask through augmentation and batching.
  config.data = ml_collections.ConfigDict(dict(
      source='instance_labels', data_dir='../shared/data/nuclei_dsb2018',
      image_size=(256, 256), max_instances=160, mean=0.05, std=0.065))
  config.eval_split = 'val'
  config.classical = ml_collections.ConfigDict(dict(min_size=10))
  config.augment = 'flip_lr|flip_ud|brightness(0.05)|contrast(0.3)'
  # Nuclei are small (sqrt(area) at 256 px: median 12, 5th-95th percentile 5-32 px):
  # strides 4..32, anchors 8..64, and a region's level is 2 up to 32 px (canonical
  # box 32 at level 3). Second-stage sizes for a 2-core CPU: 128 RoIs and 32 mask RoIs
  # an image (a quarter foreground: about the nuclei of a typical image), mask head 32
  # wide; 2000 -> 500 proposals in training, 1000 at test. At most 131 nuclei on one
  # image: 200 detections an image.
  config.model = ml_collections.ConfigDict(dict(
      name='mask_rcnn', stem_stride=2, stage_widths=(32, 64, 128, 256), fpn_width=64,
      anchor_sizes=(8.0, 16.0, 32.0, 64.0), canonical_box_size=32.0, canonical_level=3,
      num_rois=128, num_mask_rois=32, fc_width=256, mask_head_width=32,
      rpn_pre_nms_topk_train=2000, rpn_post_nms_topk_train=500,
      rpn_pre_nms_topk_test=2000, rpn_post_nms_topk_test=1000, max_detections=200))
  config.num_epochs = 16
  config.batch_size = 4
  config.eval_batch_size = 4
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=1.5e-3, warmup_steps=50, weight_decay=1e-4,
      grad_clip_norm=10.0))
  config.log_every_steps = 20
  # COCOeval on all val images every this many epochs (the learning curve). The loop's
  # own check (recall50 / precision50) runs at the end only, on the first
  # `loop_eval_examples` val images: it is a second full inference pass otherwise.
  config.ap_every_epochs = 4
  config.eval_every_epochs = 1000
  config.loop_eval_examples = 16
  # COCOeval's params.maxDets: AP and AP50 count up to 400 detections an image.
  config.max_dets = (1, 100, 400)
  config.num_shown = 4
  if variant == 'runlocal':
    config.data.image_size = (64, 64)
    config.model.update(stage_widths=(16, 32, 64, 64), fpn_width=32, fc_width=64,
                        mask_head_width=32, num_rois=32, num_mask_rois=8,
                        rpn_pre_nms_topk_train=300, rpn_post_nms_topk_train=64,
                        rpn_pre_nms_topk_test=300, rpn_post_nms_topk_test=64,
                        max_detections=50)
    config.num_epochs = 2
    config.ap_every_epochs = 1
    config.loop_eval_examples = 2
    config.batch_size = 4
    config.log_every_steps = 1
    config.optimizer.warmup_steps = 1
    config.num_shown = 2
  return config


def sources(config) -> tuple[Source, Source]:
  data = {k: v for k, v in config.data.items() if k not in ('mean', 'std')}
  return build_source(data, 'train'), build_source(data, config.eval_split)


def classical_results(config, source: Source) -> tuple[list[dict], dict[int, np.ndarray]]:
  """COCO results of the Otsu + connected-components baseline on the source's original
  images, and its instance masks [n, h, w] per image id (for the figure)."""
  truth = source.metadata['ground_truth']
  results, masks_by_id = [], {}
  for image_id in sorted(truth.imgs):
    info = truth.imgs[image_id]
    with Image.open(os.path.join(source.metadata['image_dir'], info['file_name'])) as image:
      pixels = np.asarray(image.convert('RGB'))
    boxes, scores, masks = classical.objects(pixels, min_size=config.classical.min_size)
    masks_by_id[image_id] = masks
    if not len(masks):
      continue
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for box, score, rle in zip(boxes, scores, rles):
      x0, y0, x1, y1 = (float(v) for v in box)
      results.append({'image_id': int(image_id), 'category_id': 1,
                      'bbox': [x0, y0, x1 - x0, y1 - y0], 'score': float(score),
                      'segmentation': {'size': [int(s) for s in rle['size']],
                                       'counts': rle['counts'].decode('ascii')}})
  return results, masks_by_id


def _curve_path(workdir: str) -> str:
  return os.path.join(workdir, 'ap_by_epoch.json')


def _row(metrics: dict) -> dict[str, float]:
  return {f'{iou} {stat}': metrics[iou][stat] for iou in ('segm', 'bbox')
          for stat in ('AP', 'AP50')}


def train_with_curve(config, workdir: str, model, task, train_source: Source,
                     eval_source: Source):
  """Trains in stretches of `ap_every_epochs`, scoring val with COCOeval after each.

  Each stretch is one `train_and_evaluate` call with `max_steps` at the stretch's
  end: the loop saves there and the next call resumes exactly, so the run equals an
  uninterrupted one. Returns (result, curve, COCO report of the final state, its
  detections of the first `num_shown` val images); the curve (one entry per
  scored epoch) is kept in ap_by_epoch.json, so a resumed run keeps the points it has.
  """
  steps_per_epoch = train_source.num_examples // config.batch_size
  loop_eval = dataclasses.replace(
      eval_source, dataset=eval_source.dataset.take(config.loop_eval_examples),
      num_examples=min(config.loop_eval_examples, eval_source.num_examples))
  curve = []
  if os.path.exists(_curve_path(workdir)):
    with open(_curve_path(workdir)) as f:
      curve = json.load(f)
  stops = list(range(config.ap_every_epochs, config.num_epochs, config.ap_every_epochs))
  coco, shown = None, None
  for epoch in stops + [config.num_epochs]:
    result = train_and_evaluate(config, workdir, model=model, train_source=train_source,
                                eval_source=loop_eval, task=task,
                                augment_fn=instance_shapes.augment_fn(config),
                                max_steps=epoch * steps_per_epoch)
    if result.preempted:
      return result, curve, None, None
    last = epoch == config.num_epochs
    if any(point['epoch'] == epoch for point in curve) and not last:
      continue
    start = time.perf_counter()
    results, image_ids, shown = instance_eval.predict_coco(
        result.state, eval_source, batch_size=config.eval_batch_size,
        inputs_fn=task.inputs_fn, keep=config.num_shown if last else 0)
    coco = instance_eval.score_results(results, eval_source, image_ids,
                                       max_dets=config.max_dets)
    curve = [p for p in curve if p['epoch'] != epoch] + [{
        'epoch': epoch, 'step': epoch * steps_per_epoch,
        'train_seconds': result.train_seconds, **_row(coco['metrics']),
        'eval_seconds': time.perf_counter() - start}]
    print(f'epoch {epoch}: ' + ', '.join(f'{k} {v:.3f}' for k, v in curve[-1].items()
                                        if k.endswith(('AP', 'AP50'))), flush=True)
    if distributed.is_main_process():
      with open(_curve_path(workdir), 'w') as f:
        json.dump(curve, f, indent=1)
  return result, curve, coco, shown


def _table(rows: dict[str, dict[str, float]]) -> list[str]:
  lines = ['| method | segm AP | segm AP50 | bbox AP | bbox AP50 |', '|---|---|---|---|---|']
  for name, row in rows.items():
    lines.append(f'| {name} | ' + ' | '.join(
        f'{row[f"{iou} {stat}"]:.3f}' for iou in ('segm', 'bbox') for stat in ('AP', 'AP50'))
        + ' |')
  return lines


def main(config: ml_collections.ConfigDict, workdir: str):
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  # Each stretch of train_with_curve builds its step anew: the persistent cache turns
  # the recompilations into cache hits.
  jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'jax_cache'))
  train_source, eval_source = sources(config)
  dropped = {split: s.metadata['dropped_instances'] for split, s in
             (('train', train_source), (config.eval_split, eval_source))}
  model, task = instance_shapes.build(config, train_source)
  result, curve, coco, shown = train_with_curve(config, workdir, model, task, train_source,
                                                eval_source)
  if result.preempted:
    print('preempted: rerun the same command to resume from the last checkpoint.')
    return result
  if not distributed.is_main_process():
    return result
  classical_start = time.perf_counter()
  baseline, baseline_masks = classical_results(config, eval_source)
  classical_coco = instance_eval.score_results(
      baseline, eval_source, sorted(eval_source.metadata['ground_truth'].imgs),
      max_dets=config.max_dets)
  classical_seconds = time.perf_counter() - classical_start
  classical_row = _row(classical_coco['metrics'])
  rows = {'Mask R-CNN': _row(coco['metrics']),
          f'Otsu + connected components (min {config.classical.min_size} px)': classical_row}

  truth = next(eval_source.dataset.batch(config.num_shown).as_numpy_iterator())
  shown_ids = [int(i) for i in truth['image_id']]
  model_masks, classical_masks, truth_masks = [], [], []
  for n, image_id in enumerate(shown_ids):
    keep = shown['valid'][n] & (shown['scores'][n] >= 0.5)
    model_masks.append(shown['masks'][n][keep])
    truth_masks.append(truth['instance_masks'][n][truth['instance_valid'][n]])
    # The baseline ran on the original image: bring its masks to the model input frame.
    height, width = truth['original_size'][n]
    region = [int(side) for side in truth['resized_size'][n]]
    canvas = np.zeros((len(baseline_masks[image_id]),) + truth['image'].shape[1:3], bool)
    canvas[:, :region[0], :region[1]] = baseline_masks[image_id][
        :, nearest_indices(int(height), region[0])][:, :, nearest_indices(int(width), region[1])]
    classical_masks.append(canvas)
  instance_plots.methods_grid(
      os.path.join(workdir, 'overlays.png'), truth['image'],
      {'ground truth': truth_masks, 'Mask R-CNN (score >= 0.5)': model_masks,
       'Otsu + components': classical_masks},
      f'nuclei, {config.eval_split} images: ground truth, Mask R-CNN, classical',
      column_titles=[eval_source.metadata['image_names'][i - 1][:10] for i in shown_ids])
  instance_plots.ap_curve(
      os.path.join(workdir, 'ap_by_epoch.png'), [p['epoch'] for p in curve],
      {'Mask R-CNN segm AP': [p['segm AP'] for p in curve],
       'Mask R-CNN segm AP50': [p['segm AP50'] for p in curve]},
      {'classical segm AP': classical_row['segm AP'],
       'classical segm AP50': classical_row['segm AP50']},
      f'COCOeval on {eval_source.num_examples} {config.eval_split} images (maxDets '
      f'{config.max_dets[-1]})')
  plots.learning_curves(
      os.path.join(workdir, 'loss_curves.png'), {'': read_metrics(workdir)},
      {'': result.steps_per_epoch},
      [[f'train/{t}' for t in ('loss',) + instance_loss.LOSS_TERMS],
       ['eval/recall50', 'eval/precision50']],
      titles=['training loss terms', 'validation (score >= 0.5, IoU >= 0.5)'], log_scale=[0])
  wall = time.perf_counter() - start
  lines = [
      '# Instance segmentation of nuclei: Mask R-CNN vs. a classical baseline', '',
      f'Validation: all {eval_source.num_examples} `{config.eval_split}` images '
      f'({eval_source.metadata["num_instances"]:,} nuclei, up to '
      f'{eval_source.metadata["max_instances_per_image"]} per image), COCOeval '
      f'(pycocotools) in the original image pixels with `params.maxDets = '
      f'{list(config.max_dets)}`: AP and AP50 count up to {config.max_dets[-1]} detections '
      'per image.', '', *_table(rows), '',
      f'The classical row runs on the original images (no resizing): Otsu threshold on the '
      f'grey level, 8-connected components, components under {config.classical.min_size} '
      f'pixels removed, score = the component area in pixels; {len(baseline):,} '
      f'detections, {classical_seconds:.1f} s for the whole split. Mask R-CNN: '
      f'{coco["num_results"]:,} detections (score >= {config.model.get("score_threshold", 0.05)}'
      f', at most {config.model.max_detections} per image).', '',
      f'Instances dropped by the static cap (max_instances {config.data.max_instances}; at '
      f'most {train_source.metadata["max_instances_per_image"]} nuclei on a train image): '
      f'{dropped}. Whole command: '
      f'{wall / 60:.1f} min.', '',
      '### AP by epoch (val)', '',
      '| epoch | train s | segm AP | segm AP50 | bbox AP | bbox AP50 |',
      '|---|---|---|---|---|---|']
  lines += [f'| {p["epoch"]} | {p["train_seconds"]:.0f} | {p["segm AP"]:.3f} | '
            f'{p["segm AP50"]:.3f} | {p["bbox AP"]:.3f} | {p["bbox AP50"]:.3f} |'
            for p in curve]
  lines += ['', '![AP by epoch](ap_by_epoch.png)', '', '![overlays](overlays.png)', '',
            '## Mask R-CNN details', '',
            instance_shapes.report(config, workdir, result, coco, wall, train_source,
                                   eval_source), '',
            '### COCOeval of the classical baseline', '']
  lines += [f'```\n{classical_coco["summaries"][iou].rstrip()}\n```' for iou in ('segm', 'bbox')]
  lines += ['', '![loss curves](loss_curves.png)', '']
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))
  print('\n'.join(_table(rows)))
  print(f'\nreport: {os.path.join(workdir, "report.md")}')
  with open(os.path.join(workdir, 'coco_metrics.json'), 'w') as f:
    json.dump({'mask_rcnn': coco['metrics'], 'classical': classical_coco['metrics'],
               'max_dets': list(config.max_dets), 'dropped_instances': dropped,
               'curve': curve}, f, indent=1)
  return result


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/instance_nuclei')
