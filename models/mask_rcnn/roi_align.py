"""RoIAlign on one image, single-level and FPN multi-level, as vectorised gathers.

Semantics are exactly torchvision's `ops.roi_align` (detectron2's ROIAlignV2 when
`aligned=True`): a box is scaled by `spatial_scale` (minus 0.5 when aligned, so pixel
centres line up with feature cell centres), split into an h x w grid of bins, and each
bin averages `sampling_ratio`^2 bilinear samples at evenly spaced points. A sample with
y < -1 or y > H (likewise x) contributes 0; y in [-1, 0] is clamped to 0 and y >= H - 1
reads row H - 1 (torchvision's `bilinear_interpolate`). With aligned=False boxes are at
least one feature cell wide and tall (the legacy behaviour).

Bilinear weights and the out-of-range test are separable in y and x, so each box needs
per-row and per-column indices and weights (`[R, h, 2g]`, `[R, w, 2g]` for g =
sampling_ratio), one gather of `[R, h, 2g, w, 2g, C]` feature values and a weighted
sum. The multi-level version flattens all levels into one `[sum H_l * W_l, C]` table
and gathers each box from its own level with per-box offset, size and scale, so its
cost does not grow with the number of levels.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax.numpy as jnp

from models.mask_rcnn.box_ops import box_area


def _sample_axis(start: jnp.ndarray, length: jnp.ndarray, size: jnp.ndarray,
                 num_bins: int, sampling_ratio: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Indices and weights along one axis for boxes spanning [start, start + length).

  start, length, size: `[R]` (size = the feature map's extent along this axis).
  Returns (indices `[R, num_bins, 2 * g]` int32, weights `[R, num_bins, 2 * g]`) where
  entries 2i, 2i + 1 are the low and high neighbours of sample i of a bin; the weights
  include the 1 / g of the bin average and are 0 for out-of-range samples.
  """
  g = sampling_ratio
  bin_size = (length / num_bins)[:, None, None]
  bins = jnp.arange(num_bins, dtype=jnp.float32)[None, :, None]
  offsets = (jnp.arange(g, dtype=jnp.float32)[None, None, :] + 0.5) * bin_size / g
  coords = start[:, None, None] + bins * bin_size + offsets            # [R, bins, g]
  size = size[:, None, None]
  inside = (coords >= -1.0) & (coords <= size.astype(jnp.float32))
  coords = jnp.maximum(coords, 0.0)
  low = jnp.floor(coords).astype(jnp.int32)
  at_end = low >= size - 1
  low = jnp.where(at_end, size - 1, low)
  high = jnp.where(at_end, size - 1, low + 1)
  frac = jnp.where(at_end, 0.0, coords - low.astype(jnp.float32))
  scale = inside.astype(jnp.float32) / g
  indices = jnp.stack([low, high], axis=-1).reshape(low.shape[0], num_bins, 2 * g)
  weights = jnp.stack([(1.0 - frac) * scale, frac * scale], axis=-1)
  return indices, weights.reshape(indices.shape)


def _roi_align_flat(features_flat: jnp.ndarray, boxes_xyxy: jnp.ndarray,
                    offset: jnp.ndarray, height: jnp.ndarray, width: jnp.ndarray,
                    scale: jnp.ndarray, output_size: tuple[int, int], sampling_ratio: int,
                    aligned: bool) -> jnp.ndarray:
  """RoIAlign of box r on the `height[r] x width[r]` map stored row-major at
  `features_flat[offset[r]:]` (`[P, C]`), with spatial scale `scale[r]`. -> `[R, h, w, C]`."""
  out_h, out_w = output_size
  boxes = boxes_xyxy.astype(jnp.float32) * scale[:, None] - (0.5 if aligned else 0.0)
  box_w, box_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  if not aligned:
    box_w, box_h = jnp.maximum(box_w, 1.0), jnp.maximum(box_h, 1.0)
  rows, row_weights = _sample_axis(boxes[:, 1], box_h, height, out_h, sampling_ratio)
  cols, col_weights = _sample_axis(boxes[:, 0], box_w, width, out_w, sampling_ratio)
  flat_index = (offset[:, None, None, None, None]
                + rows[:, :, :, None, None] * width[:, None, None, None, None]
                + cols[:, None, None, :, :])                            # [R, h, 2g, w, 2g]
  values = features_flat[flat_index]                                    # [R, h, 2g, w, 2g, C]
  weights = row_weights[:, :, :, None, None] * col_weights[:, None, None, :, :]
  # float32 weights promote bfloat16 features, so the average accumulates in float32.
  pooled = jnp.sum(values * weights[..., None], axis=(2, 4))
  return pooled.astype(features_flat.dtype)


def _check(features: jnp.ndarray, boxes_xyxy: jnp.ndarray, output_size, sampling_ratio: int):
  if features.ndim != 3:
    raise ValueError(f'roi_align.py: features must be [H, W, C], got {features.shape}.')
  if boxes_xyxy.ndim != 2 or boxes_xyxy.shape[1] != 4:
    raise ValueError(f'roi_align.py: boxes_xyxy must be [R, 4], got {boxes_xyxy.shape}.')
  if len(output_size) != 2:
    raise ValueError(f'roi_align.py: output_size must be (h, w), got {output_size}.')
  if not isinstance(sampling_ratio, int) or sampling_ratio <= 0:
    raise ValueError(f'roi_align.py: sampling_ratio must be a positive int (static '
                     f'shapes; torchvision\'s adaptive 0 is not supported), got {sampling_ratio}.')


def roi_align(features: jnp.ndarray, boxes_xyxy: jnp.ndarray, *, output_size: tuple[int, int],
              spatial_scale: float, sampling_ratio: int = 2, aligned: bool = True
              ) -> jnp.ndarray:
  """RoIAlign of `boxes_xyxy [R, 4]` (image pixels) on `features [H, W, C]` (one image).

  spatial_scale: feature cells per image pixel (1 / stride).
  Returns `[R, h, w, C]` for output_size (h, w), in the features' dtype;
  differentiable with respect to `features`.
  """
  _check(features, boxes_xyxy, output_size, sampling_ratio)
  height, width, channels = features.shape
  num_boxes = boxes_xyxy.shape[0]
  per_box = lambda value: jnp.full((num_boxes,), value)
  return _roi_align_flat(
      features.reshape(height * width, channels), boxes_xyxy, per_box(0), per_box(height),
      per_box(width), per_box(spatial_scale).astype(jnp.float32), tuple(output_size),
      sampling_ratio, aligned)


def assign_boxes_to_levels(boxes_xyxy: jnp.ndarray, *, num_levels: int,
                           canonical_box_size: float = 224.0, canonical_level: int = 4,
                           first_level: int = 2) -> jnp.ndarray:
  """FPN level index (0 = `first_level`) of each box `[R, 4]` -> `[R]` int32.

  detectron2's `assign_boxes_to_levels`: floor(canonical_level + log2(sqrt(area) /
  canonical_box_size + 1e-8)), clamped to [first_level, first_level + num_levels - 1].
  """
  box_size = jnp.sqrt(box_area(boxes_xyxy.astype(jnp.float32)))
  level = jnp.floor(canonical_level + jnp.log2(box_size / canonical_box_size + 1e-8))
  level = jnp.clip(level, first_level, first_level + num_levels - 1)
  return level.astype(jnp.int32) - first_level


def multilevel_roi_align(features: Sequence[jnp.ndarray], strides: Sequence[int],
                         boxes_xyxy: jnp.ndarray, *, output_size: tuple[int, int],
                         sampling_ratio: int = 2, canonical_box_size: float = 224.0,
                         canonical_level: int = 4, first_level: int = 2,
                         aligned: bool = True) -> jnp.ndarray:
  """RoIAlign of each box on its FPN level, `[R, 4]` -> `[R, h, w, C]` (one image).

  features: one `[H_l, W_l, C]` map per level, finest first, with
    strides[i] = 2 ** (first_level + i) (e.g. P2..P5 with strides 4..32).
  Each box is pooled from level `assign_boxes_to_levels(...)` with spatial scale
  1 / strides[level]; the result equals `roi_align` on that level alone.
  """
  if len(features) != len(strides) or not features:
    raise ValueError(f'roi_align.py: features and strides must be non-empty and of equal '
                     f'length, got {len(features)} and {len(strides)}.')
  expected = [2 ** (first_level + i) for i in range(len(strides))]
  if list(strides) != expected:
    raise ValueError(f'roi_align.py: strides must be 2 ** (first_level + i) = {expected} '
                     f'for first_level={first_level}, got {list(strides)}.')
  for level_features in features:
    _check(level_features, boxes_xyxy, output_size, sampling_ratio)
  channels = {f.shape[-1] for f in features}
  if len(channels) != 1:
    raise ValueError(f'roi_align.py: all levels must have the same channels, got {channels}.')
  heights = [f.shape[0] for f in features]
  widths = [f.shape[1] for f in features]
  offsets = [0, *itertools.accumulate(h * w for h, w in zip(heights[:-1], widths[:-1]))]
  features_flat = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in features], axis=0)
  level = assign_boxes_to_levels(boxes_xyxy, num_levels=len(features),
                                 canonical_box_size=canonical_box_size,
                                 canonical_level=canonical_level, first_level=first_level)
  per_box = lambda values, dtype: jnp.asarray(values, dtype)[level]
  scales = [1.0 / s for s in strides]
  return _roi_align_flat(
      features_flat, boxes_xyxy, per_box(offsets, jnp.int32), per_box(heights, jnp.int32),
      per_box(widths, jnp.int32), per_box(scales, jnp.float32), tuple(output_size),
      sampling_ratio, aligned)

