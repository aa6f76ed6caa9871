"""Figures of augmentation draws: one example and its augmented copies, labels overlaid,
so a person can see that image, masks and boxes move together
(experiments/show_augmentations.py)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.patches
from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np

ID_STRIDE = 1000  # coco_draws' classes: instance index * ID_STRIDE + label


def _palette(n: int) -> np.ndarray:
  return matplotlib.colormaps.get_cmap('tab20')(np.arange(n) % 20)[:, :3]


def camvid_draws(path: str, examples: Sequence[Mapping[str, np.ndarray]], num_classes: int,
                 spec: str) -> None:
  """Top row the images, bottom row each with its semantic mask overlaid (pixels outside
  [0, num_classes), e.g. void, uncoloured); `examples[0]` is the original.

  examples: {'image': uint8 [H, W, 3], 'mask': int [H, W]} each.
  """
  colours = _palette(num_classes)
  fig = Figure(figsize=(2.6 * len(examples), 4.4))
  axes = fig.subplots(2, len(examples), squeeze=False)
  for col, ex in enumerate(examples):
    image = ex['image'].astype(np.float32) / 255
    mask = ex['mask']
    overlay = image.copy()
    labelled = mask < num_classes
    overlay[labelled] = 0.45 * image[labelled] + 0.55 * colours[mask[labelled]]
    for row, shown in enumerate((image, overlay)):
      axes[row, col].imshow(shown)
      axes[row, col].set_axis_off()
    axes[0, col].set_title('original' if col == 0 else f'draw {col}', fontsize=9)
  fig.suptitle(f'CamVid: {spec}', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def coco_draws(path: str, examples: Sequence[Mapping[str, np.ndarray]],
               class_names: Sequence[str], spec: str) -> None:
  """One panel per example (`examples[0]` the original): instance masks overlaid, boxes
  drawn (dashed for crowd regions) and labelled with their class names.

  examples: {'image': uint8 [H, W, 3], 'instance_masks': [N, H, W], 'boxes': boxes_xyxy
  [N, 4], 'classes': [N] = instance index * ID_STRIDE + label, 'is_crowd': [N]} each; the
  instance index (its row in `examples[0]`) keeps one colour per instance across draws
  that drop instances.
  """
  cols = min(4, len(examples))
  rows = -(-len(examples) // cols)
  fig = Figure(figsize=(3.6 * cols, 3.6 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for index, (ax, ex) in enumerate(zip(axes.flat, examples)):
    image = ex['image'].astype(np.float32) / 255
    # One colour per instance, found again through the id carried in `classes`.
    colours = _palette(len(examples[0]['classes']))[ex['classes'] // ID_STRIDE]
    for k, inst in enumerate(ex['instance_masks']):
      on = inst.astype(bool)
      image[on] = 0.5 * image[on] + 0.5 * colours[k]
    ax.imshow(image)
    for k, (x0, y0, x1, y1) in enumerate(ex['boxes']):
      colour = colours[k]
      # Box edges lie on pixel boundaries; imshow puts pixel centres at integers.
      ax.add_patch(matplotlib.patches.Rectangle(
          (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2,
          linestyle='--' if ex['is_crowd'][k] else '-'))
      ax.text(x0, y0, class_names[int(ex['classes'][k] % ID_STRIDE)], color='white',
              fontsize=6, va='bottom', bbox=dict(facecolor=colour, alpha=0.7, pad=0.5, linewidth=0))
    ax.set_title('original' if index == 0 else f'draw {index} ({len(ex["boxes"])} objects)',
                 fontsize=9)
  fig.suptitle(f'COCO: {spec}', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
