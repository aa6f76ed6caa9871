"""PNG figures for reports: learning curves, confusion matrices, image grids, filters."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib
import matplotlib.patches
from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np


def learning_curves(path: str, runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
                    steps_per_epoch: Mapping[str, int],
                    panels: Sequence[str | Sequence[str]] = (
                        'train/loss', 'eval/loss', 'train/accuracy', 'eval/accuracy'),
                    titles: Optional[Sequence[str]] = None, log_scale: Sequence[int] = ()
                    ) -> None:
  """The learning curves of every task: `runs[run][metric] = [(step, value)]`
  (train.metric_writer.read_metrics of each run's workdir), one panel per entry of
  `panels` (a metric, or several drawn together), one line per run and metric, the x
  axis in epochs so runs of different step counts line up. Panels named in `log_scale`
  (by index) use a log y axis; a metric no run logged is left out of its panel."""
  panels = [(p,) if isinstance(p, str) else tuple(p) for p in panels]
  fig = Figure(figsize=(4.2 * len(panels), 3.4))
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for index, (ax, metrics) in enumerate(zip(axes, panels)):
    for run, series in runs.items():
      for metric in metrics:
        if not series.get(metric):
          continue
        steps, values = zip(*series[metric])
        label = ' '.join(([run] if len(runs) > 1 else [])
                         + ([metric.split('/', 1)[-1]] if len(metrics) > 1 else []))
        ax.plot(np.asarray(steps) / steps_per_epoch[run], values, label=label or None,
                marker='o' if metric.startswith('eval') else None, markersize=3)
    ax.set_title(titles[index] if titles else ', '.join(metrics))
    if index in log_scale:
      ax.set_yscale('log')
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def confusion_matrix(path: str, matrix: np.ndarray, class_names: Sequence[str],
                     title: str) -> None:
  """Row-normalised heat map with the counts written in each cell."""
  fig = Figure(figsize=(7.5, 6.5))
  ax = fig.subplots()
  rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha='right')
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  for i in range(len(class_names)):
    for j in range(len(class_names)):
      ax.text(j, i, str(matrix[i, j]), ha='center', va='center', fontsize=7,
              color='white' if rates[i, j] > 0.5 else 'black')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def image_grid(path: str, images: np.ndarray, captions: Sequence[str], title: str,
               columns: int = 8) -> None:
  """Grid of `[N, H, W, C]` uint8 images with a caption under each."""
  n = len(images)
  rows = max(1, -(-n // columns))
  fig = Figure(figsize=(1.6 * columns, 1.9 * rows))
  axes = fig.subplots(rows, columns, squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, caption in zip(axes.flat, images, captions):
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray')
    ax.set_title(caption, fontsize=6.5)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def line_plot(path: str, x: Sequence[float], series: Mapping[str, Sequence[float]],
              xlabel: str, ylabel: str, title: str) -> None:
  fig = Figure(figsize=(5.5, 3.8))
  ax = fig.subplots()
  for name, values in series.items():
    ax.plot(x, values, marker='o', label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def filters_and_maps(path: str, image: np.ndarray, kernel: np.ndarray,
                     maps: np.ndarray) -> None:
  """First-layer filters `[kh, kw, 1, F]` (top rows) and their maps on `image` (below)."""
  num = kernel.shape[-1]
  columns = min(num, 8)
  rows = -(-num // columns)
  fig = Figure(figsize=(1.5 * columns, 1.5 * (2 * rows + 1)))
  axes = fig.subplots(2 * rows + 1, columns, squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  axes[0, 0].imshow(image[..., 0], cmap='gray')
  axes[0, 0].set_title('input', fontsize=7)
  for f in range(num):
    r, c = divmod(f, columns)
    axes[1 + r, c].imshow(kernel[:, :, 0, f], cmap='bwr',
                          vmin=-np.abs(kernel).max(), vmax=np.abs(kernel).max())
    axes[1 + r, c].set_title(f'filter {f}', fontsize=6)
    axes[1 + rows + r, c].imshow(maps[..., f], cmap='viridis')
    axes[1 + rows + r, c].set_title(f'map {f}', fontsize=6)
  fig.suptitle('CNN first layer: 3x3 filters (blue-red) and their feature maps')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
