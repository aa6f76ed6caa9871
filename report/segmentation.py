"""PNG figures for segmentation reports: learning curves and mask overlays."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402


def palette(num_classes: int) -> np.ndarray:
  """uint8 [num_classes, 3] distinct colours (tab20 order)."""
  colors = plt.get_cmap('tab20' if num_classes > 10 else 'tab10').colors
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
  fig, axes = plt.subplots(n, 3, figsize=(9, 3.1 * n * images.shape[1] / images.shape[2] + 0.8),
                           squeeze=False)
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
  plt.close(fig)


def learning_curves(path: str, series: Mapping[str, Sequence[tuple[int, float]]],
                    steps_per_epoch: int,
                    metrics: Optional[Sequence[str]] = None) -> None:
  """`series[name] = [(step, value)]` (train.metric_writer.read_metrics); one panel per
  metric in `metrics` (default: train/eval loss, eval mIoU, eval Dice when present)."""
  if metrics is None:
    metrics = [m for m in ('train/loss', 'eval/loss', 'eval/miou', 'eval/dice')
               if series.get(m)]
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    if series.get(metric):
      steps, values = zip(*series[metric])
      ax.plot(np.asarray(steps) / steps_per_epoch, values,
              marker='o' if metric.startswith('eval') else None, markersize=3)
    ax.set_title(metric)
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
