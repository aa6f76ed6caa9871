"""Greedy non-maximum suppression on one image, with static shapes (jit and vmap).

Semantics are torchvision's `nms` / `batched_nms` (used by detectron2): boxes are
visited in descending score order and a kept box removes every later box whose IoU
with it is strictly greater than `iou_threshold`. Equal scores keep the input order.

Static shapes: the K inputs are sorted, their `[K, K]` IoU matrix is computed once,
a `lax.fori_loop` over the K sorted boxes does the greedy pass, and the first
`max_outputs` survivors in score order are returned as indices into the input with a
validity mask. Callers batch it with `jax.vmap` over images.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from models.mask_rcnn.box_ops import pairwise_iou


def _check_shapes(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, valid: jnp.ndarray | None):
  k = boxes_xyxy.shape[0]
  if boxes_xyxy.shape != (k, 4):
    raise ValueError(f'nms.py: boxes_xyxy must be [K, 4], got {boxes_xyxy.shape}.')
  if scores.shape != (k,):
    raise ValueError(f'nms.py: scores must be [K] = [{k}], got {scores.shape}.')
  if valid is not None and valid.shape != (k,):
    raise ValueError(f'nms.py: valid must be [K] = [{k}] bool, got {valid.shape}.')


def _greedy_nms(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, groups: jnp.ndarray | None,
                iou_threshold: float, max_outputs: int, valid: jnp.ndarray | None
                ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`nms`, where with `groups` only boxes of the same group suppress each other."""
  _check_shapes(boxes_xyxy, scores, valid)
  num_boxes = boxes_xyxy.shape[0]
  if valid is None:
    valid = jnp.ones((num_boxes,), bool)
  valid = valid.astype(bool)
  # Valid boxes first, then by descending score; lexsort is stable, so ties keep the
  # input order (torchvision's sort is not guaranteed stable; tests avoid ties).
  order = jnp.lexsort((-scores, ~valid)).astype(jnp.int32)
  sorted_boxes = boxes_xyxy[order]
  overlaps = pairwise_iou(sorted_boxes, sorted_boxes) > iou_threshold
  # Only a box later in score order can be suppressed by box i.
  overlaps = overlaps & (jnp.arange(num_boxes)[None, :] > jnp.arange(num_boxes)[:, None])
  if groups is not None:
    # Masking the IoU matrix is exact, unlike shifting boxes by group * extent (which
    # loses float32 precision on large offsets) and gives the same kept set.
    sorted_groups = groups[order]
    overlaps = overlaps & (sorted_groups[:, None] == sorted_groups[None, :])

  def visit(i, keep):
    # keep[i] is final here: every box that could suppress box i came earlier.
    return keep & ~(keep[i] & overlaps[i])

  keep = jax.lax.fori_loop(0, num_boxes, visit, valid[order])
  # A stable sort on "not kept" moves kept boxes to the front, still in score order.
  kept_first = jnp.argsort(~keep, stable=True)[:max_outputs]
  keep_valid = keep[kept_first]
  indices = jnp.where(keep_valid, order[kept_first], 0).astype(jnp.int32)
  if max_outputs > num_boxes:
    pad = max_outputs - num_boxes
    indices = jnp.concatenate([indices, jnp.zeros((pad,), jnp.int32)])
    keep_valid = jnp.concatenate([keep_valid, jnp.zeros((pad,), bool)])
  return indices, keep_valid


def nms(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, *, iou_threshold: float,
        max_outputs: int, valid: jnp.ndarray | None = None
        ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Greedy NMS of `boxes_xyxy [K, 4]` scored by `scores [K]` (one image).

  valid: optional `[K]` bool; invalid boxes (padding) are never kept and suppress
    nothing.
  Returns (indices `[max_outputs]` int32 into the K inputs, of the kept boxes in
  descending score order; keep_valid `[max_outputs]` bool). Slots beyond the number
  of kept boxes have keep_valid False and index 0.
  """
  return _greedy_nms(boxes_xyxy, scores, None, iou_threshold, max_outputs, valid)


def batched_nms(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, groups: jnp.ndarray, *,
                iou_threshold: float, max_outputs: int, valid: jnp.ndarray | None = None
                ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """NMS where boxes only suppress boxes of the same group (e.g. per-class NMS).

  groups: `[K]` int group id of each box (e.g. its class). Other arguments and the
  result as for `nms`: the kept boxes of all groups together, in descending score order.
  """
  if groups.shape != scores.shape:
    raise ValueError(f'nms.py: groups must be [K] = {scores.shape}, got {groups.shape}.')
  return _greedy_nms(boxes_xyxy, scores, groups, iou_threshold, max_outputs, valid)
