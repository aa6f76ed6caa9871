"""Figures and tables of instance segmentation: detections and instance masks drawn on
images, AP by epoch, and the Mask R-CNN report (COCOeval tables, loss terms, timing)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.patches
from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np

from data import pipeline
from report import plots
from tasks.instance import classical, coco_eval, evaluators
from tasks.instance.task import LOSS_TERMS
from train import run_record

_COLOURS = matplotlib.colormaps.get_cmap('tab10').colors


def _draw(ax, image: np.ndarray, boxes_xyxy: np.ndarray, classes: np.ndarray,
          masks: np.ndarray | None, class_names: Sequence[str],
          scores: np.ndarray | None) -> None:
  """One panel: every instance its own colour, mask at 45 % opacity, box and label."""
  canvas = image.astype(np.float32) / 255.0
  for i, box in enumerate(boxes_xyxy):
    colour = np.asarray(_COLOURS[i % len(_COLOURS)])
    if masks is not None:
      alpha = 0.45 * (masks[i] >= 0.5)[..., None]
      canvas = canvas * (1 - alpha) + colour * alpha
  ax.imshow(np.clip(canvas, 0, 1), interpolation='nearest',
            extent=(0, image.shape[1], image.shape[0], 0))
  for i, (x0, y0, x1, y1) in enumerate(boxes_xyxy):
    colour = _COLOURS[i % len(_COLOURS)]
    ax.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                              edgecolor=colour, linewidth=1.2))
    label = class_names[int(classes[i])]
    if scores is not None:
      label += f' {scores[i]:.2f}'
    ax.text(x0, y0, label, fontsize=6, color='white', va='bottom',
            bbox=dict(facecolor=colour, alpha=0.8, pad=0.5, linewidth=0))
  ax.set_axis_off()


def detections_grid(path: str, images: np.ndarray, ground_truth: Mapping[str, np.ndarray],
                    detections: Mapping[str, np.ndarray], class_names: Sequence[str],
                    title: str, score_threshold: float = 0.5) -> None:
  """Row 1: ground-truth instances; row 2: detections with score >= `score_threshold`.

  images: uint8 [N, H, W, 3]; ground_truth: boxes [N, M, 4], classes [N, M],
  instance_masks [N, M, H, W], instance_valid [N, M]; detections: boxes_xyxy [N, D, 4],
  scores [N, D], classes [N, D], masks [N, D, H, W], valid [N, D].
  """
  count = len(images)
  fig = Figure(figsize=(2.2 * count, 4.6))
  axes = fig.subplots(2, count, squeeze=False)
  for n in range(count):
    real = np.flatnonzero(ground_truth['instance_valid'][n])
    _draw(axes[0, n], images[n], ground_truth['boxes'][n][real],
          ground_truth['classes'][n][real], ground_truth['instance_masks'][n][real],
          class_names, None)
    shown = np.flatnonzero(detections['valid'][n]
                           & (detections['scores'][n] >= score_threshold))
    _draw(axes[1, n], images[n], detections['boxes_xyxy'][n][shown],
          detections['classes'][n][shown], detections['masks'][n][shown], class_names,
          detections['scores'][n][shown])
  axes[0, 0].set_title('ground truth', fontsize=8, loc='left')
  axes[1, 0].set_title(f'prediction (score >= {score_threshold})', fontsize=8, loc='left')
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=130)


def _instance_overlay(image: np.ndarray, masks: np.ndarray, seed: int = 0) -> np.ndarray:
  """float [H, W, 3]: the image (contrast-stretched) with each mask [N, H, W] in its own
  random colour at 55 % opacity; many small objects stay distinguishable."""
  canvas = image.astype(np.float32)
  canvas = canvas / max(float(np.percentile(canvas, 99.5)), 1e-6)
  canvas = np.clip(canvas, 0, 1)
  colours = np.random.default_rng(seed).uniform(0.2, 1.0, (len(masks), 3))
  for mask, colour in zip(masks, colours):
    alpha = 0.55 * np.asarray(mask, bool)[..., None]
    canvas = canvas * (1 - alpha) + colour * alpha
  return canvas


def methods_grid(path: str, images: np.ndarray, rows: Mapping[str, Sequence[np.ndarray]],
                 title: str, column_titles: Sequence[str] | None = None) -> None:
  """One row per method (e.g. ground truth, a model, a baseline), one column per image.

  images: [N, H, W, 3]; rows: name -> N arrays of instance masks [n_i, H, W] (bool or
  probabilities >= 0.5), each drawn in its own colour, with the count in the title.
  """
  count = len(images)
  fig = Figure(figsize=(2.6 * count, 2.7 * len(rows)))
  axes = fig.subplots(len(rows), count, squeeze=False)
  for r, (name, masks) in enumerate(rows.items()):
    for n in range(count):
      ax = axes[r, n]
      ax.imshow(_instance_overlay(images[n], np.asarray(masks[n]) >= 0.5, seed=n),
                interpolation='nearest')
      ax.set_title(f'{name}: {len(masks[n])}', fontsize=7, loc='left')
      if column_titles is not None and r == 0:
        ax.set_title(f'{column_titles[n]}\n{name}: {len(masks[n])}', fontsize=7, loc='left')
      ax.set_axis_off()
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def ap_curve(path: str, epochs: Sequence[float], series: Mapping[str, Sequence[float]],
             baselines: Mapping[str, float], title: str) -> None:
  """AP by epoch (one line per series) with horizontal lines for fixed baselines."""
  fig = Figure(figsize=(5.5, 3.6))
  ax = fig.subplots()
  for i, (name, values) in enumerate(series.items()):
    ax.plot(epochs, values, marker='o', color=_COLOURS[i % len(_COLOURS)], label=name)
  for i, (name, value) in enumerate(baselines.items()):
    ax.axhline(value, linestyle='--', linewidth=1,
               color=_COLOURS[(i + len(series)) % len(_COLOURS)], label=name)
  ax.set_xlabel('epoch')
  ax.set_ylabel('COCO AP')
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def loss_curves(path: str, series: Mapping[str, Sequence[tuple[int, float]]],
                steps_per_epoch: int, coco: str = 'coco') -> None:
  """Training loss terms, the in-loop check and the COCO AP of evaluator `coco`."""
  plots.learning_curves(
      path, {'': series}, {'': steps_per_epoch},
      [[f'train/{t}' for t in ('loss',) + LOSS_TERMS], ['eval/recall50', 'eval/precision50'],
       [f'eval/{coco}/bbox/AP', f'eval/{coco}/segm/AP']],
      titles=['training loss terms', 'validation (score >= 0.5, IoU >= 0.5)',
              'validation COCO AP'], log_scale=[0])


def _loss_terms_table(series: Mapping[str, Sequence[tuple[int, float]]]) -> list[str]:
  lines = ['### Training loss terms (mean of the first and last logging interval)', '',
           '| term | first | last |', '|---|---|---|']
  for name in ('loss',) + LOSS_TERMS:
    points = series.get(f'train/{name}', [])
    if points:
      lines.append(f'| {name} | {points[0][1]:.4f} | {points[-1][1]:.4f} |')
  return lines


def _per_category_table(per_category: Mapping[str, Mapping[str, float]]) -> list[str]:
  if not per_category:
    return []
  names = list(next(iter(per_category.values())))
  return (['### AP per category', '', '| | ' + ' | '.join(names) + ' |',
           '|---' * (len(names) + 1) + '|']
          + [f'| {iou_type} | ' + ' | '.join('n/a' if aps[n] < 0 else f'{100 * aps[n]:.1f}'
                                             for n in names) + ' |'
             for iou_type, aps in per_category.items()] + [''])


def mask_rcnn_details(config, result, coco: Mapping[str, Any], series, train_source,
                      eval_source, ceiling: Mapping[str, Mapping[str, float]] | None = None
                      ) -> str:
  """The Mask R-CNN report: COCOeval table of `coco` (tasks/instance/evaluators.py:
  coco_results of the last evaluation), the resize `ceiling` if given, timing, loss
  terms (`series`: train.metric_writer.read_metrics), AP per category, COCOeval's
  printouts and the setup."""
  last = result.final_eval
  lines = [
      coco_eval.format_table(coco['metrics']), '',
      f'COCOeval (pycocotools) on all {eval_source.num_examples} `{config.eval_split}` '
      f'images, {coco["num_results"]} detections, category ids as in the annotation file. '
      f'In-loop check at the end: recall50 {last.get("recall50", float("nan")):.3f}, '
      f'precision50 {last.get("precision50", float("nan")):.3f}.', '']
  if ceiling:
    lines += [
        f'Ceiling at {tuple(config.data.image_size)}: the annotations themselves, resized '
        'by the source and mapped back, score box AP '
        f'{ceiling["bbox"]["AP"]:.3f} and mask AP {ceiling["segm"]["AP"]:.3f} (mask AP50 '
        f'{ceiling["segm"]["AP50"]:.3f}); a perfect model at this image size scores no '
        'more.', '']
  lines += [
      '| parameters | epochs | training time (s) | training images/s | compile (s) |',
      '|---|---|---|---|---|',
      f'| {result.num_params:,} | {config.num_epochs} | {result.train_seconds:.1f} | '
      f'{result.images_per_second(config.batch_size):,.1f} | {result.compile_seconds:.1f} |',
      '', *_loss_terms_table(series), '', *_per_category_table(coco['per_category_ap'])]
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


def mask_rcnn_sections(workdir: str, title: str, config, result, series, shown, ceiling,
                       train_source, eval_source, clock) -> list[str]:
  """The report.md sections of a Mask R-CNN run (mask_rcnn_details, `clock`'s summary);
  draws loss_curves.png and detections.png: the first examples of `eval_source` above
  their detections `shown` (tasks/instance/evaluation.py: predict_source)."""
  truth = next(pipeline.as_numpy(eval_source.dataset.batch(len(shown['valid']))))
  detections_grid(os.path.join(workdir, 'detections.png'), truth['image'], truth, shown,
                  eval_source.class_names, f'Mask R-CNN on {title}: {config.eval_split} images')
  loss_curves(os.path.join(workdir, 'loss_curves.png'), series, result.steps_per_epoch)
  details = mask_rcnn_details(config, result, evaluators.coco_results(result.final_eval),
                              series, train_source, eval_source, ceiling)
  return [details, clock.summary(), '![loss curves](loss_curves.png)',
          '![detections](detections.png)']


def methods_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
  """| method | segm AP | segm AP50 | bbox AP | bbox AP50 |, one row per method's metrics."""
  return ['| method | segm AP | segm AP50 | bbox AP | bbox AP50 |', '|---|---|---|---|---|'] + [
      f'| {name} | ' + ' | '.join(f'{metrics[iou][stat]:.3f}' for iou in ('segm', 'bbox')
                                  for stat in ('AP', 'AP50')) + ' |'
      for name, metrics in rows.items()]


def _overlay_masks(shown, truth, classical_masks) -> dict[str, list[np.ndarray]]:
  """Per shown image: ground truth, detections with score >= 0.5, classical masks (from
  the original image to the model input, tasks/instance/classical.py)."""
  rows = {'ground truth': [], 'Mask R-CNN (score >= 0.5)': [], 'Otsu + components': []}
  for n, image_id in enumerate(truth['image_id']):
    rows['ground truth'].append(truth['instance_masks'][n][truth['instance_valid'][n]])
    keep = shown['valid'][n] & (shown['scores'][n] >= 0.5)
    rows['Mask R-CNN (score >= 0.5)'].append(shown['masks'][n][keep])
    rows['Otsu + components'].append(classical.at_model_input(
        classical_masks[int(image_id)], truth['original_size'][n], truth['resized_size'][n],
        truth['image'].shape[1:3]))
  return rows


def nuclei_sections(workdir: str, config, result, series, shown, classical_coco,
                    classical_masks, classical_seconds: float, train_source, eval_source,
                    clock) -> list[str]:
  """The report.md sections of experiments/instance_nuclei.py: Mask R-CNN (its last
  `coco` evaluation) beside the classical baseline (`classical_coco`: score_results),
  AP by epoch (every evaluation of the history), the Mask R-CNN details; draws
  overlays.png, ap_by_epoch.png and loss_curves.png."""
  split, max_dets = config.eval_split, list(config.evals.coco.max_dets)
  coco = evaluators.coco_results(result.final_eval)
  curve = [(entry['epoch'], result.seconds_by_step.get(entry['step'], float('nan')),
            evaluators.coco_results(entry)['metrics']) for entry in result.eval_history]
  rows = {'Mask R-CNN': coco['metrics'], f'Otsu + connected components (min '
          f'{config.classical.min_size} px)': classical_coco['metrics']}
  truth = next(pipeline.as_numpy(eval_source.dataset.batch(len(shown['valid']))))
  methods_grid(os.path.join(workdir, 'overlays.png'), truth['image'],
               _overlay_masks(shown, truth, classical_masks),
               f'nuclei, {split} images: ground truth, Mask R-CNN, classical',
               column_titles=[eval_source.metadata['image_names'][int(i) - 1][:10]
                              for i in truth['image_id']])
  baseline = classical_coco['metrics']['segm']
  ap_curve(os.path.join(workdir, 'ap_by_epoch.png'), [epoch for epoch, _, _ in curve],
           {f'Mask R-CNN segm {stat}': [m['segm'][stat] for _, _, m in curve]
            for stat in ('AP', 'AP50')},
           {f'classical segm {stat}': baseline[stat] for stat in ('AP', 'AP50')},
           f'COCOeval on {eval_source.num_examples} {split} images (maxDets {max_dets[-1]})')
  loss_curves(os.path.join(workdir, 'loss_curves.png'), series, result.steps_per_epoch)
  dropped = {name: s.metadata['dropped_instances']
             for name, s in (('train', train_source), (split, eval_source))}
  return [
      f'Validation: all {eval_source.num_examples} `{split}` images '
      f'({eval_source.metadata["num_instances"]:,} nuclei, up to '
      f'{eval_source.metadata["max_instances_per_image"]} per image), COCOeval '
      f'(pycocotools) in the original image pixels with `params.maxDets = {max_dets}`: AP '
      f'and AP50 count up to {max_dets[-1]} detections per image.',
      '\n'.join(methods_table(rows)),
      'The classical row runs on the original images (no resizing): Otsu threshold on the '
      'grey level, 8-connected components, components under '
      f'{config.classical.min_size} pixels removed, score = the component area in pixels; '
      f'{classical_coco["num_results"]:,} detections, {classical_seconds:.1f} s for the '
      f'whole split. Mask R-CNN: {coco["num_results"]:,} detections (score >= '
      f'{config.model.get("score_threshold", 0.05)}, at most {config.model.max_detections} '
      'per image).',
      f'Instances dropped by the static cap (max_instances {config.data.max_instances}; at '
      f'most {train_source.metadata["max_instances_per_image"]} nuclei on a train image): '
      f'{dropped}. {clock.summary()}',
      '\n'.join(['### AP by epoch (val)', '',
                 '| epoch | train s | segm AP | segm AP50 | bbox AP | bbox AP50 |',
                 '|---|---|---|---|---|---|'] + [
          f'| {epoch} | {seconds:.0f} | ' + ' | '.join(
              f'{m[iou][stat]:.3f}' for iou in ('segm', 'bbox') for stat in ('AP', 'AP50'))
          + ' |' for epoch, seconds, m in curve]),
      '![AP by epoch](ap_by_epoch.png)', '![overlays](overlays.png)',
      '## Mask R-CNN details',
      mask_rcnn_details(config, result, coco, series, train_source, eval_source),
      '### COCOeval of the classical baseline',
      *[f'```\n{classical_coco["summaries"][iou].rstrip()}\n```' for iou in ('segm', 'bbox')],
      '![loss curves](loss_curves.png)']
