"""Segmentation reports: mask overlays, learning curves, and the report's text and tables
(as (header, rows), for report.tables.markdown_table)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib
import matplotlib.patches
from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np

from report import plots
from train import run_record


def palette(num_classes: int) -> np.ndarray:
  """uint8 [num_classes, 3] distinct colours (tab20 order)."""
  colors = matplotlib.colormaps.get_cmap('tab20' if num_classes > 10 else 'tab10').colors
  return (np.asarray([colors[k % len(colors)] for k in range(num_classes)]) * 255).astype(
      np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int,
            alpha: float = 0.5, ignore_color=(0, 0, 0)) -> np.ndarray:
  """uint8 [H, W, 3]: `image` [H, W, C] blended with the class colours of `mask` [H, W];
  pixels outside [0, num_classes) (ignore) are drawn in `ignore_color`."""
  rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, -1)
  in_range = (mask >= 0) & (mask < num_classes)
  colors = palette(num_classes)[np.clip(mask, 0, num_classes - 1)]
  colors[~in_range] = ignore_color
  blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colors
  return np.clip(blended, 0, 255).astype(np.uint8)


def overlays(path: str, images: np.ndarray, masks: np.ndarray, predictions: np.ndarray,
             class_names: Sequence[str], title: str) -> None:
  """One row per example: image | ground truth overlay | prediction overlay.

  images `[N, H, W, C]` uint8, masks and predictions `[N, H, W]` int.
  """
  n, k = len(images), len(class_names)
  fig = Figure(figsize=(9, 3.1 * n * images.shape[1] / images.shape[2] + 0.8))
  axes = fig.subplots(n, 3, squeeze=False)
  for row in range(n):
    panels = (images[row], overlay(images[row], masks[row], k),
              overlay(images[row], predictions[row], k))
    for ax, panel, name in zip(axes[row], panels, ('image', 'ground truth', 'prediction')):
      ax.imshow(panel[..., 0] if panel.shape[-1] == 1 else panel, cmap='gray')
      ax.set_title(name, fontsize=8)
      ax.axis('off')
  colors = palette(k) / 255.0
  handles = [matplotlib.patches.Patch(color=colors[i], label=name)
             for i, name in enumerate(class_names)]
  fig.legend(handles=handles, loc='lower center', ncol=min(k, 6), fontsize=7)
  fig.suptitle(title)
  fig.tight_layout(rect=(0, 0.05, 1, 0.97))
  fig.savefig(path, dpi=100)



def learning_curves(path: str, metrics: Mapping[str, Sequence[tuple[int, float]]],
                    steps_per_epoch: int) -> None:
  """report.plots.learning_curves of one run: losses, mIoU, and Dice where logged."""
  plots.learning_curves(path, {'': metrics}, {'': steps_per_epoch},
                        [m for m in ('train/loss', 'eval/loss', 'eval/miou', 'eval/dice')
                         if metrics.get(m)])


def setup(config, train_source, eval_source, weights: Optional[Sequence[float]],
          config_changes) -> str:
  """The paragraph saying what ran: data, model, loss, augmentation, optimiser, and the
  config changes of a resumed run."""
  text = (f'Data: `{config.data.source}`, {train_source.num_examples:,} training and '
          f'{eval_source.num_examples:,} `{config.eval_split}` images of '
          f'{tuple(eval_source.image_shape)}. Model: `{config.model.to_dict()}`. Loss: CE x '
          f'{config.loss.ce_weight} + soft Dice x {config.loss.dice_weight}, class weights '
          f'{"none" if weights is None else [round(float(w), 3) for w in weights]}. '
          f'Augmentation: `{config.augment or "none"}`. {config.optimizer.name} lr '
          f'{config.optimizer.learning_rate} (warm-up {config.optimizer.warmup_steps} + '
          f'cosine), batch {config.batch_size}.')
  note = run_record.changes_note(config_changes)
  return f'{text} {note}' if note else text


def summary(result, binary: bool, batch_size: int, wall_seconds: float
            ) -> tuple[list[str], list[list[str]]]:
  """(header, [row]) of the final metrics (mIoU, pixel accuracy; for a binary task the
  foreground Dice, precision and recall), eval loss and the run's size and timings."""
  final = result.final_eval
  columns = {'mIoU': 'miou', 'pixel accuracy': 'pixel_accuracy'}
  if binary:
    columns.update({'Dice (F1) fg': 'dice', 'precision': 'precision', 'recall': 'recall'})
  header = [*columns, 'eval loss', 'parameters', 'epochs', 'training time (s)',
            'training images/s', 'compile (s)', 'whole run (min)']
  row = [f'{final[key]:.4f}' for key in columns.values()] + [
      f'{final["loss"]:.4f}', f'{result.num_params:,}', final['epoch'],
      f'{result.train_seconds:.1f}', f'{result.images_per_second(batch_size):,.1f}',
      f'{result.compile_seconds:.1f}', f'{wall_seconds / 60:.1f}']
  return header, [row]


def per_class(final: Mapping[str, float], class_names: Sequence[str], binary: bool
              ) -> tuple[list[str], list[list[str]]]:
  """(header, rows) of the per-class IoU table; a binary task adds each class's Dice
  (the foreground's is `dice`, the background's `dice/<name>`)."""
  rows = []
  for k, name in enumerate(class_names):
    row = [name, f'{final[f"iou/{name}"]:.4f}']
    if binary:
      row.append(f'{final["dice" if k == 1 else f"dice/{name}"]:.4f}')
    rows.append(row)
  return ['class', 'IoU'] + (['Dice'] if binary else []), rows


def history_columns(binary: bool) -> dict[str, str]:
  """Title -> eval history key of the table of every evaluation during training."""
  return {'mIoU': 'miou', 'pixel accuracy': 'pixel_accuracy', 'eval loss': 'loss',
          **({'Dice': 'dice'} if binary else {})}
