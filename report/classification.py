"""Figures and tables for classification reports: confusion matrix, misclassified
images, accuracy under shifts, first-layer filters and their feature maps, per-class
accuracy."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np


def confusion_figure(path: str, matrix: np.ndarray, class_names: Sequence[str],
                     title: str) -> None:
  """Row-normalised heat map of `matrix` `[K, K]` (row = true class) with the counts
  written in each cell."""
  matrix = np.asarray(matrix)
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


def misclassified_grid(path: str, images: np.ndarray, misclassified: Sequence[Sequence[int]],
                       class_names: Sequence[str], title: str) -> None:
  """The images `[N, H, W, C]` named by the `confusion` evaluator's `misclassified`
  rows `[index, true, predicted]`, captioned 'true -> predicted'."""
  rows = np.asarray(misclassified, np.int64).reshape(-1, 3)
  image_grid(path, images[rows[:, 0]],
             [f'{class_names[t]}\n-> {class_names[p]}' for _, t, p in rows], title)


def shift_figure(path: str, accuracies: Mapping[str, Mapping[int, float]]) -> None:
  """Accuracy against the shift in pixels, one line per model: `{model: {shift: acc}}`."""
  fig = Figure(figsize=(5.5, 3.8))
  ax = fig.subplots()
  for name, by_shift in accuracies.items():
    ax.plot(list(by_shift), list(by_shift.values()), marker='o', label=name)
  ax.set_xlabel('shift (pixels, mean of 4 directions)')
  ax.set_ylabel('test accuracy')
  ax.set_title('Accuracy on translated test images')
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


def evaluation_figures(workdir: str, results: Mapping[str, Any], images: np.ndarray,
                       class_names: Sequence[str], title: str, suffix: str = '',
                       confusion: str = 'confusion') -> None:
  """confusion<suffix>.png and misclassified<suffix>.png from the `confusion` evaluator
  (named `confusion`) in `results` (an evaluation history entry) and the evaluation
  images `[N, H, W, C]` its indices point into; `title` starts each figure's title."""
  confusion_figure(os.path.join(workdir, f'confusion{suffix}.png'),
                   results[f'{confusion}/matrix'], class_names, f'{title} test confusion')
  misclassified_grid(os.path.join(workdir, f'misclassified{suffix}.png'), images,
                     results[f'{confusion}/misclassified'], class_names,
                     f'{title} misclassified test images (true -> predicted)')


def shift_table(accuracies: Mapping[str, Mapping[int, float]]
                ) -> tuple[list[str], list[list[Any]]]:
  """(header, rows) of a markdown table: a row per shift, a column per model."""
  shifts = list(next(iter(accuracies.values())))
  return (['shift (px)', *accuracies],
          [[s, *(f'{by_shift[s]:.4f}' for by_shift in accuracies.values())] for s in shifts])


def per_class_table(class_names: Sequence[str], accuracies: Mapping[str, Sequence[float]]
                    ) -> tuple[list[str], list[list[Any]]]:
  """(header, rows) of a markdown table: a row per class, a column per model."""
  return (['class', *accuracies],
          [[name, *(f'{per_class[k]:.3f}' for per_class in accuracies.values())]
           for k, name in enumerate(class_names)])


def runs_table(results: Mapping[str, Any], batch_size: int,
               extra: Mapping[str, Sequence[Any]] | None = None
               ) -> tuple[list[str], list[list[Any]]]:
  """(header, rows) of a markdown table, a row per trained run (`{name: TrainResult}`):
  its last evaluation's accuracy and loss, parameters, training time and speed, then
  the `extra` columns (title -> a value per run)."""
  extra = extra or {}
  rows = [[name, f'{r.final_eval["accuracy"]:.4f}', f'{r.final_eval["loss"]:.4f}',
           f'{r.num_params:,}', f'{r.train_seconds:.1f}',
           f'{r.images_per_second(batch_size):,.0f}', r.final_eval['epoch'],
           f'{r.compile_seconds:.1f}', *(values[i] for values in extra.values())]
          for i, (name, r) in enumerate(results.items())]
  return (['model', 'test accuracy', 'test loss', 'parameters', 'training time (s)',
           'training images/s', 'epochs', 'compile (s)', *extra], rows)
