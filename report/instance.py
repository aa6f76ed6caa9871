"""Figures of instance segmentation: detections and instance masks drawn on images, AP."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.patches
from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np

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
    ax.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                               linewidth=1.2))
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
