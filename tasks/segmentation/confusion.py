"""Exact segmentation metrics from a confusion matrix summed over the whole evaluation set.

Each eval batch contributes integer pixel counts `[C, C]` (rows: true class, columns:
predicted class; int32, exact for one batch); the loop adds them up over all batches on
the host in int64 (train/evaluate.py; an int32 total would wrap past 2^31 pixels) and the
metrics are computed once from the total, so mIoU is that of the whole set, not a mean
of per-batch means.
Pixels of padded examples (`valid` False) and ignore pixels (any label outside
[0, C)) are not counted.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jnp.ndarray, predictions: jnp.ndarray, num_classes: int,
                     weights: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """int32 `[C, C]` counts of (true, predicted) over pixels with weight 1 and a label in [0, C).

  labels, predictions: integer arrays of one shape (e.g. `[B, H, W]`); weights: bool
  or 0/1 of the same shape (None = all pixels).
  """
  labels = labels.astype(jnp.int32)
  counted = (labels >= 0) & (labels < num_classes)
  if weights is not None:
    counted &= weights.astype(bool)
  index = jnp.clip(labels, 0, num_classes - 1) * num_classes + predictions.astype(jnp.int32)
  counts = jnp.bincount(index.reshape(-1), weights=counted.reshape(-1).astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
  """float64 [C]: TP / (TP + FP + FN); NaN for a class absent from labels and predictions."""
  matrix = np.asarray(matrix, np.float64)
  tp = np.diag(matrix)
  union = matrix.sum(0) + matrix.sum(1) - tp
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(union > 0, tp / union, np.nan)


def dice_per_class(matrix: np.ndarray) -> np.ndarray:
  """float64 [C]: 2 TP / (2 TP + FP + FN) (= F1); NaN for an absent class."""
  matrix = np.asarray(matrix, np.float64)
  tp = np.diag(matrix)
  denominator = matrix.sum(0) + matrix.sum(1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def metrics_from_confusion(matrix: np.ndarray, class_names: Sequence[str]
                           ) -> dict[str, float]:
  """mIoU (mean over classes present in labels or predictions), pixel accuracy,
  `iou/<class>` per class, and for two classes the foreground (class 1) `dice`,
  `precision` and `recall`."""
  matrix = np.asarray(matrix, np.float64)
  if matrix.shape != (len(class_names), len(class_names)):
    raise ValueError(f'tasks/segmentation/confusion.py: confusion matrix {matrix.shape}, expected '
                     f'[{len(class_names)}, {len(class_names)}] for classes {class_names}.')
  iou = iou_per_class(matrix)
  total = matrix.sum()
  out = {'miou': float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan'),
         'pixel_accuracy': float(np.trace(matrix) / total) if total else float('nan')}
  out.update({f'iou/{name}': float(v) for name, v in zip(class_names, iou)})
  if len(class_names) == 2:
    tp, fp, fn = matrix[1, 1], matrix[0, 1], matrix[1, 0]
    dice = dice_per_class(matrix)
    out['dice'] = float(dice[1])
    out[f'dice/{class_names[0]}'] = float(dice[0])
    out['precision'] = float(tp / (tp + fp)) if tp + fp else float('nan')
    out['recall'] = float(tp / (tp + fn)) if tp + fn else float('nan')
  return out


def means_from_sums(sums: Mapping[str, np.ndarray], class_names: Sequence[str]
                    ) -> dict[str, float]:
  """The loop's `means_fn`: {'confusion', 'loss', 'pixels', 'count'} sums -> metrics."""
  pixels = float(sums['pixels'])
  out = {'loss': float(sums['loss']) / pixels if pixels else float('nan')}
  out.update(metrics_from_confusion(sums['confusion'], class_names))
  out['count'] = float(sums['count'])
  return out
