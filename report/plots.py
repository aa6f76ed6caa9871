"""PNG figures for reports: learning curves, confusion matrices, image grids, filters."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402


def learning_curves(path: str, curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
                    steps_per_epoch: Mapping[str, int]) -> None:
  """`curves[model][metric] = [(step, value)]`; one panel per metric, one line per model,
  x axis in epochs so models with different step counts line up."""
  metrics = ['train/loss', 'eval/loss', 'train/accuracy', 'eval/accuracy']
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
  for ax, metric in zip(axes, metrics):
    for model, series in curves.items():
      if metric in series and series[metric]:
        steps, values = zip(*series[metric])
        epochs = np.asarray(steps) / steps_per_epoch[model]
        ax.plot(epochs, values, marker='o' if metric.startswith('eval') else None,
                markersize=3, label=model)
    ax.set_title(metric)
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def confusion_matrix(path: str, matrix: np.ndarray, class_names: Sequence[str],
                     title: str) -> None:
  """Row-normalised heat map with the counts written in each cell."""
  fig, ax = plt.subplots(figsize=(7.5, 6.5))
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
  plt.close(fig)


def image_grid(path: str, images: np.ndarray, captions: Sequence[str], title: str,
               columns: int = 8) -> None:
  """Grid of `[N, H, W, C]` uint8 images with a caption under each."""
  n = len(images)
  rows = max(1, -(-n // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, caption in zip(axes.flat, images, captions):
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray')
    ax.set_title(caption, fontsize=6.5)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def line_plot(path: str, x: Sequence[float], series: Mapping[str, Sequence[float]],
              xlabel: str, ylabel: str, title: str) -> None:
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for name, values in series.items():
    ax.plot(x, values, marker='o', label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def filters_and_maps(path: str, image: np.ndarray, kernel: np.ndarray,
                     maps: np.ndarray) -> None:
  """First-layer filters `[kh, kw, 1, F]` (top rows) and their maps on `image` (below)."""
  num = kernel.shape[-1]
  columns = min(num, 8)
  rows = -(-num // columns)
  fig, axes = plt.subplots(2 * rows + 1, columns, figsize=(1.5 * columns, 1.5 * (2 * rows + 1)),
                           squeeze=False)
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
  plt.close(fig)
