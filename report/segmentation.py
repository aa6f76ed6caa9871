"""PNG figures for segmentation reports: learning curves and mask overlays."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.patches
from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np


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
