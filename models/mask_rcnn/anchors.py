"""Anchors for an FPN's levels, their RPN labels (detectron2's Matcher) and sampling.

Conventions:
- Anchors are `anchors_xyxy [A, 4]` float32 in image pixels (continuous convention:
  pixel i covers [i, i+1)). Level l has a ceil(H / s_l) x ceil(W / s_l) feature map;
  the anchors of cell (y, x) are centred at ((x + 0.5) * s_l, (y + 0.5) * s_l).
- Order: level by level; within a level (y, x, ratio) row-major, so an RPN head output
  `[B, H_l, W_l, num_ratios * k]` reshaped to `[B, H_l * W_l * num_ratios, k]` lines up.
- One size per level; aspect ratio = h / w, area = size^2.
- Labels: 1 positive (foreground), 0 negative (background), -1 ignored.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from models.mask_rcnn.box_ops import pairwise_ioa, pairwise_iou


def num_anchors_per_level(image_size: tuple[int, int], strides: Sequence[int],
                          num_ratios: int) -> list[int]:
  """Anchor counts of each level: ceil(H / s) * ceil(W / s) * num_ratios."""
  height, width = image_size
  return [math.ceil(height / s) * math.ceil(width / s) * num_ratios for s in strides]


def generate_anchors(image_size: tuple[int, int], strides: Sequence[int],
                     sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
  """All anchors of an image of `image_size` (H, W): float32 NumPy `[A_total, 4]`.

  strides, sizes: one per level (e.g. (4, 8, 16, 32, 64) and (32, 64, 128, 256, 512)).
  aspect_ratios: h / w of the anchors of every cell (e.g. (0.5, 1.0, 2.0)).
  `num_anchors_per_level` gives the split of A_total into levels.
  """
  if len(sizes) != len(strides):
    raise ValueError(f'anchors.py: sizes must have one entry per level '
                     f'(len(strides) = {len(strides)}), got {len(sizes)}.')
  height, width = image_size
  ratios = np.asarray(aspect_ratios, np.float64)
  levels = []
  for stride, size in zip(strides, sizes):
    anchor_w = np.sqrt(size * size / ratios)   # w * h = size^2, h / w = ratio
    anchor_h = ratios * anchor_w
    cell = np.stack([-anchor_w, -anchor_h, anchor_w, anchor_h], axis=-1) / 2  # [R, 4]
    ys = (np.arange(math.ceil(height / stride)) + 0.5) * stride
    xs = (np.arange(math.ceil(width / stride)) + 0.5) * stride
    cy, cx = np.meshgrid(ys, xs, indexing='ij')
    centres = np.stack([cx, cy, cx, cy], axis=-1)  # [H_l, W_l, 4]
    levels.append((centres[:, :, None, :] + cell[None, None]).reshape(-1, 4))
  return np.concatenate(levels, axis=0).astype(np.float32)


def label_anchors(anchors_xyxy: jnp.ndarray, gt_boxes_xyxy: jnp.ndarray,
                  gt_valid: jnp.ndarray, *, positive_iou: float = 0.7,
                  negative_iou: float = 0.3, allow_low_quality_matches: bool = True,
                  ignore_boxes_xyxy: jnp.ndarray | None = None,
                  ignore_valid: jnp.ndarray | None = None, ignore_ioa: float = 0.5
                  ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Labels anchors `[A, 4]` against the ground truth `[N, 4]` of one image.

  detectron2's Matcher with thresholds (negative_iou, positive_iou): an anchor's best
  IoU over the valid gts >= positive_iou -> 1, < negative_iou -> 0, else -1. With
  `allow_low_quality_matches`, for each valid gt every anchor tied for the highest IoU
  with it becomes positive when that IoU is > 0. Invalid gts (`gt_valid` False) never
  match; with no valid gt every anchor is negative.
  ignore_boxes_xyxy `[M, 4]` / ignore_valid `[M]`: crowd regions; a non-positive
  anchor whose IoA (intersection over the anchor's area) with a valid one is >=
  `ignore_ioa` becomes -1.
  Returns (labels `[A]` int32, matched_gt `[A]` int32: index of the best-IoU valid gt,
  meaningful where labels == 1; 0 when there is no valid gt).
  """
  num_anchors = anchors_xyxy.shape[0]
  if gt_boxes_xyxy.ndim != 2 or gt_boxes_xyxy.shape[1] != 4:
    raise ValueError(f'anchors.py: gt_boxes_xyxy must be [N, 4], got {gt_boxes_xyxy.shape}.')
  if gt_valid.shape != gt_boxes_xyxy.shape[:1]:
    raise ValueError(f'anchors.py: gt_valid must be [N] = {gt_boxes_xyxy.shape[:1]}, '
                     f'got {gt_valid.shape}.')
  if gt_boxes_xyxy.shape[0] == 0:
    labels = jnp.zeros((num_anchors,), jnp.int32)
    matched_gt = jnp.zeros((num_anchors,), jnp.int32)
  else:
    gt_valid = gt_valid.astype(bool)
    # -1 for invalid gts: below any threshold, and never the argmax while a valid gt exists.
    iou = jnp.where(gt_valid[:, None], pairwise_iou(gt_boxes_xyxy, anchors_xyxy), -1.0)
    best_iou = jnp.max(iou, axis=0)                                    # [A]
    matched_gt = jnp.argmax(iou, axis=0).astype(jnp.int32)             # [A]
    labels = jnp.where(best_iou >= positive_iou, 1,
                       jnp.where(best_iou < negative_iou, 0, -1)).astype(jnp.int32)
    if allow_low_quality_matches:
      best_per_gt = jnp.max(iou, axis=1, keepdims=True)                # [N, 1]
      is_best = (iou == best_per_gt) & (best_per_gt > 0)
      labels = jnp.where(jnp.any(is_best, axis=0), 1, labels)
  if ignore_boxes_xyxy is not None and ignore_boxes_xyxy.shape[0] > 0:
    if ignore_valid is None:
      ignore_valid = jnp.ones(ignore_boxes_xyxy.shape[:1], bool)
    ioa = pairwise_ioa(anchors_xyxy, ignore_boxes_xyxy)                # [A, M]
    in_crowd = jnp.any((ioa >= ignore_ioa) & ignore_valid.astype(bool)[None, :], axis=1)
    labels = jnp.where(in_crowd & (labels != 1), -1, labels)
  return labels, matched_gt


def sample_labels(labels: jnp.ndarray, key: jax.Array, *, num_samples: int,
                  positive_fraction: float) -> jnp.ndarray:
  """Keeps a fixed-size random subset of labelled anchors (or proposals), `[A]` -> `[A]`.

  detectron2's `subsample_labels`: at most int(num_samples * positive_fraction)
  positives (labels > 0) chosen uniformly at random, then negatives (labels == 0) up
  to num_samples in all; every other entry becomes -1. Kept entries keep their label.
  Static shapes: random priorities and `lax.top_k`, no boolean indexing.
  """
  if labels.ndim != 1:
    raise ValueError(f'anchors.py: labels must be [A], got {labels.shape}.')
  num_labels = labels.shape[0]
  max_positives = min(int(num_samples * positive_fraction), num_labels)
  priority = jax.random.uniform(key, labels.shape)  # in [0, 1): candidates beat the -1s
  positive, negative = labels > 0, labels == 0
  chosen_positive = jnp.zeros(labels.shape, bool)
  if max_positives > 0:
    _, index = jax.lax.top_k(jnp.where(positive, priority, -1.0), max_positives)
    chosen_positive = chosen_positive.at[index].set(positive[index])
  num_negatives = num_samples - jnp.sum(chosen_positive)
  chosen_negative = jnp.zeros(labels.shape, bool)
  max_negatives = min(num_samples, num_labels)
  if max_negatives > 0:
    _, index = jax.lax.top_k(jnp.where(negative, priority, -1.0), max_negatives)
    # top_k sorts by priority, so the first num_negatives candidates are a uniform draw.
    take = negative[index] & (jnp.arange(max_negatives) < num_negatives)
    chosen_negative = chosen_negative.at[index].set(take)
  return jnp.where(chosen_positive | chosen_negative, labels, -1).astype(jnp.int32)
