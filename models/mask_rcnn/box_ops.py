"""Box arithmetic for detection: areas, pairwise IoU/IoA, delta coding, clipping.

Conventions:
- `boxes_xyxy` are float absolute pixel coordinates (x0, y0, x1, y1) in the continuous
  convention (pixel i covers [i, i+1)), so a box's width is `x1 - x0` (no +1).
- Deltas are detectron2's `Box2BoxTransform` (dx, dy, dw, dh): centre offsets in units
  of the anchor's size and log size ratios, each multiplied by its `weights` entry.
- Every function takes arbitrary leading batch dimensions `[...]`; pairwise functions
  broadcast those of both arguments.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

# The largest dw/dh `decode_boxes` exponentiates by default: a box at most 1000/16
# times its anchor, as in detectron2 (keeps exp() finite early in training).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)
# Widths/heights below this are floored in `encode_boxes`, so a degenerate box (e.g. a
# zero padding row matched by a masked-out anchor) gives large finite deltas, not inf/NaN.
_MIN_SIZE = 1e-6


def box_area(boxes_xyxy: jnp.ndarray) -> jnp.ndarray:
  """`[..., 4]` -> `[...]` areas; inverted boxes (x1 < x0 or y1 < y0) have area 0."""
  width = jnp.maximum(boxes_xyxy[..., 2] - boxes_xyxy[..., 0], 0.0)
  height = jnp.maximum(boxes_xyxy[..., 3] - boxes_xyxy[..., 1], 0.0)
  return width * height


def _pairwise_intersection(boxes_a: jnp.ndarray, boxes_b: jnp.ndarray) -> jnp.ndarray:
  """`[..., N, 4]`, `[..., M, 4]` -> `[..., N, M]` intersection areas."""
  top_left = jnp.maximum(boxes_a[..., :, None, :2], boxes_b[..., None, :, :2])
  bottom_right = jnp.minimum(boxes_a[..., :, None, 2:], boxes_b[..., None, :, 2:])
  size = jnp.maximum(bottom_right - top_left, 0.0)
  return size[..., 0] * size[..., 1]


def _safe_divide(numerator: jnp.ndarray, denominator: jnp.ndarray) -> jnp.ndarray:
  """numerator / denominator, 0 where denominator <= 0 (NaN-free values and gradients)."""
  positive = denominator > 0
  return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def pairwise_iou(boxes_a: jnp.ndarray, boxes_b: jnp.ndarray) -> jnp.ndarray:
  """Intersection over union, `[..., N, 4]`, `[..., M, 4]` -> `[..., N, M]`.

  0 where the union is empty (two zero-area boxes), never NaN.
  """
  intersection = _pairwise_intersection(boxes_a, boxes_b)
  union = box_area(boxes_a)[..., :, None] + box_area(boxes_b)[..., None, :] - intersection
  return _safe_divide(intersection, union)


def pairwise_ioa(boxes_a: jnp.ndarray, boxes_b: jnp.ndarray) -> jnp.ndarray:
  """Intersection over the area of `boxes_a`, `[..., N, 4]`, `[..., M, 4]` -> `[..., N, M]`.

  The fraction of each box of `a` (e.g. an anchor) covered by each box of `b` (e.g. a
  crowd region); 0 where the box of `a` has zero area.
  """
  intersection = _pairwise_intersection(boxes_a, boxes_b)
  return _safe_divide(intersection, box_area(boxes_a)[..., :, None])


def _centres_and_sizes(boxes_xyxy: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
  width = boxes_xyxy[..., 2] - boxes_xyxy[..., 0]
  height = boxes_xyxy[..., 3] - boxes_xyxy[..., 1]
  return boxes_xyxy[..., 0] + 0.5 * width, boxes_xyxy[..., 1] + 0.5 * height, width, height


def encode_boxes(boxes_xyxy: jnp.ndarray, anchors_xyxy: jnp.ndarray,
                 weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> jnp.ndarray:
  """Regression targets that turn `anchors_xyxy` into `boxes_xyxy`, both `[..., 4]`.

  Returns deltas `[..., 4]` = (wx * (cx - acx) / aw, wy * (cy - acy) / ah,
  ww * log(w / aw), wh * log(h / ah)) with (wx, wy, ww, wh) = `weights`
  (detectron2 uses (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for box heads).
  Sizes are floored at 1e-6 pixels so degenerate boxes give finite deltas.
  """
  wx, wy, ww, wh = weights
  cx, cy, width, height = _centres_and_sizes(boxes_xyxy.astype(jnp.float32))
  acx, acy, anchor_width, anchor_height = _centres_and_sizes(anchors_xyxy.astype(jnp.float32))
  width, height = jnp.maximum(width, _MIN_SIZE), jnp.maximum(height, _MIN_SIZE)
  anchor_width = jnp.maximum(anchor_width, _MIN_SIZE)
  anchor_height = jnp.maximum(anchor_height, _MIN_SIZE)
  return jnp.stack([
      wx * (cx - acx) / anchor_width,
      wy * (cy - acy) / anchor_height,
      ww * jnp.log(width / anchor_width),
      wh * jnp.log(height / anchor_height),
  ], axis=-1)


def decode_boxes(deltas: jnp.ndarray, anchors_xyxy: jnp.ndarray,
                 weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP) -> jnp.ndarray:
  """Applies `deltas [..., 4]` to `anchors_xyxy [..., 4]`: the inverse of `encode_boxes`.

  dw and dh (after dividing by their weights) are clamped at `scale_clamp` before the
  exponential; below the clamp `decode_boxes(encode_boxes(b, a), a) == b` up to float
  rounding. Returns float32 `boxes_xyxy [..., 4]`.
  """
  wx, wy, ww, wh = weights
  deltas = deltas.astype(jnp.float32)
  acx, acy, anchor_width, anchor_height = _centres_and_sizes(anchors_xyxy.astype(jnp.float32))
  dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, scale_clamp)
  dh = jnp.minimum(deltas[..., 3] / wh, scale_clamp)
  cx, cy = dx * anchor_width + acx, dy * anchor_height + acy
  width, height = jnp.exp(dw) * anchor_width, jnp.exp(dh) * anchor_height
  return jnp.stack([cx - 0.5 * width, cy - 0.5 * height, cx + 0.5 * width, cy + 0.5 * height],
                   axis=-1)


def clip_boxes(boxes_xyxy: jnp.ndarray, height: float | jnp.ndarray,
               width: float | jnp.ndarray) -> jnp.ndarray:
  """Clips `[..., 4]` boxes to the image frame [0, width] x [0, height].

  `height`/`width` may be Python numbers or arrays broadcastable to `[...]` (e.g. the
  per-image sizes of a padded batch, `[B, 1]` for boxes `[B, N, 4]`).
  """
  height = jnp.asarray(height, boxes_xyxy.dtype)
  width = jnp.asarray(width, boxes_xyxy.dtype)
  x0 = jnp.clip(boxes_xyxy[..., 0], 0, width)
  y0 = jnp.clip(boxes_xyxy[..., 1], 0, height)
  x1 = jnp.clip(boxes_xyxy[..., 2], 0, width)
  y1 = jnp.clip(boxes_xyxy[..., 3], 0, height)
  return jnp.stack([x0, y0, x1, y1], axis=-1)
