"""One affine transform applied to every spatial key of a feature dict, in sync.

This is the engine behind the geometric augmentation ops (data/augment_geometric.py):
an op only draws a 3x3 matrix; `apply_affine` resamples every key with it, the way
detectron2's `AugInput.transform` routes one transform through `apply_image`,
`apply_segmentation` and `apply_box`.

Conventions (shared by every op):
- Continuous pixel coordinates: pixel (row i, col j) covers [j, j+1) x [i, i+1), so its
  centre is (j + 0.5, i + 0.5) and an H x W image spans [0, W] x [0, H].
- A matrix maps input (x, y, 1) to output (x', y', 1) in those coordinates, forward.
- `boxes` are `boxes_xyxy`: float32 [N, 4] absolute (x0, y0, x1, y1) in the same
  continuous coordinates (a box around pixel columns 2..4 is x0 = 2, x1 = 5).
Keys (all optional except `image`):
  image           [H, W, C] any real dtype; bilinear; dtype kept (uint8 is rounded).
  mask            [H, W] or [H, W, 1] integer labels; nearest; filled with `ignore`.
  instance_masks  [N, H, W] integer or bool; nearest; filled with 0.
  boxes           [N, 4] float32 boxes_xyxy; corners transformed, the enclosing
                  axis-aligned box taken (loose under rotation, exact otherwise),
                  clipped to the output frame.
  classes, is_crowd, instance_valid, and other `instance_keys`: [N, ...]; follow the
                  boxes when instances are dropped.
Other keys (e.g. a classification `label`) pass through untouched.
"""
from __future__ import annotations

import dataclasses
from typing import Union

import tensorflow as tf

# The settings are shared with the device path (data/augment_jax.py), which has no TF.
from data.augment_spec import INSTANCE_KEYS, SyncSettings  # noqa: F401  (re-exported)

Features = dict[str, tf.Tensor]
Dim = Union[int, tf.Tensor]   # a static int where known, else a scalar int32 tensor
Size = tuple[Dim, Dim]        # (height, width)

_WARP_DTYPES = (tf.uint8, tf.int32, tf.int64, tf.float16, tf.bfloat16, tf.float32,
                tf.float64)


def image_size(features: Features) -> Size:
  """(H, W) of `features['image']` [H, W, C]: static ints where known."""
  if 'image' not in features:
    raise KeyError('data/augment_warp.py: geometric ops need an `image` key [H, W, C]; '
                   f'got keys {sorted(features)}.')
  image = features['image']
  if image.shape.rank != 3:
    raise ValueError(f'data/augment_warp.py: `image` must be [H, W, C], got {image.shape}.')
  dynamic = tf.shape(image)
  return tuple(image.shape[i] if image.shape[i] is not None else dynamic[i] for i in (0, 1))


def as_float(size: Size) -> tuple[tf.Tensor, tf.Tensor]:
  return tuple(tf.cast(d, tf.float32) for d in size)


def static_or_none(d: Dim):
  return d if isinstance(d, int) else None


# ----- matrices (3x3 float32, forward, continuous coordinates) -----

def translation(tx, ty) -> tf.Tensor:
  one, zero = tf.ones([], tf.float32), tf.zeros([], tf.float32)
  tx, ty = tf.cast(tx, tf.float32), tf.cast(ty, tf.float32)
  return tf.stack([tf.stack([one, zero, tx]), tf.stack([zero, one, ty]),
                   tf.stack([zero, zero, one])])


def scaling(sx, sy) -> tf.Tensor:
  zero, one = tf.zeros([], tf.float32), tf.ones([], tf.float32)
  sx, sy = tf.cast(sx, tf.float32), tf.cast(sy, tf.float32)
  return tf.stack([tf.stack([sx, zero, zero]), tf.stack([zero, sy, zero]),
                   tf.stack([zero, zero, one])])


def rotation(radians) -> tf.Tensor:
  """Counter-clockwise as seen on screen (y points down) about the origin."""
  c, s = tf.cos(tf.cast(radians, tf.float32)), tf.sin(tf.cast(radians, tf.float32))
  zero, one = tf.zeros([], tf.float32), tf.ones([], tf.float32)
  return tf.stack([tf.stack([c, s, zero]), tf.stack([-s, c, zero]),
                   tf.stack([zero, zero, one])])


# ----- resampling -----

def _warp(x: tf.Tensor, inverse: tf.Tensor, out_size: Size, interpolation: str,
          fill: float) -> tf.Tensor:
  """Resamples [H, W, C] with `inverse` (output -> input, continuous coordinates)."""
  # ImageProjectiveTransform indexes pixel centres at integers: shift by half a pixel.
  to_index = tf.linalg.matmul(translation(-0.5, -0.5),
                              tf.linalg.matmul(inverse, translation(0.5, 0.5)))
  params = tf.reshape(to_index, [9])[:8] / to_index[2, 2]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=x[tf.newaxis], transforms=params[tf.newaxis],
      output_shape=tf.stack([tf.cast(d, tf.int32) for d in out_size]),
      fill_value=tf.cast(fill, tf.float32), interpolation=interpolation,
      fill_mode='CONSTANT')[0]
  return tf.ensure_shape(out, [static_or_none(out_size[0]), static_or_none(out_size[1]),
                               x.shape[-1]])


@dataclasses.dataclass(frozen=True)
class IndexMap:
  """A flip and/or whole-pixel shift as a copy: per axis, reverse the input or not, then
  take `out` consecutive pixels from `start` (fill where that runs off the input).

  When `exact` (the inverse is diag(+-1, +-1) with a translation that lands every output
  pixel centre on an input pixel centre), bilinear and nearest resampling give exactly
  that copy too (their weights are 1 and 0), so it replaces ImageProjectiveTransformV3's
  per-value interpolation with a reverse, a pad and a slice.
  """
  exact: tf.Tensor                      # [] bool
  flip: tuple[tf.Tensor, tf.Tensor]     # (rows, columns) [] bool
  start: tuple[tf.Tensor, tf.Tensor]    # (rows, columns) [] int32, in the reversed input
  out: Size


def index_map(inverse: tf.Tensor, in_size: Size, out_size: Size) -> IndexMap:
  """The copy that `inverse` (output -> input, continuous coordinates) amounts to."""
  def axis(scale, offset, in_count):
    # With scale +-1, every output centre lands on an input centre iff the first does.
    first = scale * 0.5 + offset - 0.5   # input pixel index of output pixel 0's centre
    whole = tf.abs(first - tf.round(first)) < 1e-3
    first = tf.cast(tf.round(first), tf.int32)
    flip = scale < 0.0
    return whole, flip, tf.where(flip, tf.cast(in_count, tf.int32) - 1 - first, first)

  col_whole, col_flip, col_start = axis(inverse[0, 0], inverse[0, 2], in_size[1])
  row_whole, row_flip, row_start = axis(inverse[1, 1], inverse[1, 2], in_size[0])
  exact = (col_whole & row_whole
           & (tf.abs(inverse[0, 1]) < 1e-6) & (tf.abs(inverse[1, 0]) < 1e-6)
           & (tf.abs(tf.abs(inverse[0, 0]) - 1.0) < 1e-6)
           & (tf.abs(tf.abs(inverse[1, 1]) - 1.0) < 1e-6))
  return IndexMap(exact, (row_flip, col_flip), (row_start, col_start), out_size)


def _window(x: tf.Tensor, start: tuple[tf.Tensor, tf.Tensor], count: Size, fill: tf.Tensor
            ) -> tf.Tensor:
  """x's [count[0], count[1]] rows and columns from `start`, fill beyond its edges."""
  shape = tf.shape(x)
  count = [tf.cast(c, tf.int32) for c in count]
  before = [tf.maximum(0, -start[a]) for a in (0, 1)]
  after = [tf.maximum(0, start[a] + count[a] - shape[a]) for a in (0, 1)]
  padded = tf.pad(x, [[before[0], after[0]], [before[1], after[1]], [0, 0]],
                  constant_values=fill)
  return tf.slice(padded, [start[0] + before[0], start[1] + before[1], 0],
                  [count[0], count[1], -1])


def _copy_or(resample, x: tf.Tensor, copy: IndexMap | None, fill: tf.Tensor) -> tf.Tensor:
  """x [H, W, C] copied by `copy` when it is exact, else `resample()`."""
  if copy is None:
    return resample()

  def copied():
    out = x
    for axis in (0, 1):
      out = tf.cond(copy.flip[axis], lambda o=out, a=axis: tf.reverse(o, [a]),
                    lambda o=out: o)
    return _window(out, copy.start, copy.out, fill)
  out = tf.cond(copy.exact, copied, resample)
  return tf.ensure_shape(out, [static_or_none(copy.out[0]), static_or_none(copy.out[1]),
                               x.shape[-1]])


def warp_image(image: tf.Tensor, inverse: tf.Tensor, out_size: Size, fill: float,
               copy: IndexMap | None = None) -> tf.Tensor:
  """Bilinear; computed in float32 so uint8 is rounded, not truncated; dtype kept."""
  def resample():
    out = _warp(tf.cast(image, tf.float32), inverse, out_size, 'BILINEAR', fill)
    if image.dtype.is_integer:
      out = tf.clip_by_value(tf.round(out), image.dtype.min, image.dtype.max)
    return tf.cast(out, image.dtype)
  fill_value = tf.cast(fill, tf.float32)
  if image.dtype.is_integer:
    fill_value = tf.clip_by_value(tf.round(fill_value), image.dtype.min, image.dtype.max)
  return _copy_or(resample, image, copy, tf.cast(fill_value, image.dtype))


def warp_labels(labels: tf.Tensor, inverse: tf.Tensor, out_size: Size, fill: float,
                copy: IndexMap | None = None) -> tf.Tensor:
  """Nearest neighbour on [H, W, C] labels: values are copied, never blended."""
  def resample():
    work = labels if labels.dtype in _WARP_DTYPES else tf.cast(labels, tf.int32)
    return tf.cast(_warp(work, inverse, out_size, 'NEAREST', fill), labels.dtype)
  work_dtype = labels.dtype if labels.dtype in _WARP_DTYPES else tf.int32
  fill_value = tf.cast(tf.cast(tf.cast(fill, tf.float32), work_dtype), labels.dtype)
  return _copy_or(resample, labels, copy, fill_value)


def transform_boxes(boxes: tf.Tensor, matrix: tf.Tensor, out_size: Size
                    ) -> tuple[tf.Tensor, tf.Tensor]:
  """boxes_xyxy [N, 4] -> (clipped boxes [N, 4], visible fraction [N]).

  The transformed box is the axis-aligned box around the four transformed corners;
  the visible fraction is its area inside [0, W] x [0, H] over its whole area.
  """
  boxes = tf.cast(boxes, tf.float32)
  x0, y0, x1, y1 = tf.unstack(boxes, 4, axis=-1)
  xs = tf.stack([x0, x1, x0, x1], axis=-1)                      # [N, 4]
  ys = tf.stack([y0, y0, y1, y1], axis=-1)
  tx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
  ty = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
  whole = tf.stack([tf.reduce_min(tx, -1), tf.reduce_min(ty, -1),
                    tf.reduce_max(tx, -1), tf.reduce_max(ty, -1)], axis=-1)
  height, width = as_float(out_size)
  clipped = tf.clip_by_value(whole, 0.0, tf.stack([width, height, width, height]))
  def area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  return clipped, tf.math.divide_no_nan(area(clipped), area(whole))


def apply_affine(features: Features, matrix: tf.Tensor, out_size: Size,
                 settings: SyncSettings) -> Features:
  """Applies one forward matrix [3, 3] to every spatial key; output frame `out_size`."""
  features = dict(features)
  inverse = tf.linalg.inv(matrix)
  fill = settings.fill
  copy = index_map(inverse, image_size(features), out_size)
  features['image'] = warp_image(features['image'], inverse, out_size, fill['image'], copy)
  if 'mask' in features:
    mask = features['mask']
    if mask.shape.rank not in (2, 3):
      raise ValueError(f'data/augment_warp.py: `mask` must be [H, W] or [H, W, 1], '
                       f'got {mask.shape}.')
    work = mask if mask.shape.rank == 3 else mask[..., tf.newaxis]
    work = warp_labels(work, inverse, out_size, fill['mask'], copy)
    features['mask'] = work if mask.shape.rank == 3 else work[..., 0]
  if 'instance_masks' in features:
    masks = features['instance_masks']
    if masks.shape.rank != 3:
      raise ValueError('data/augment_warp.py: `instance_masks` must be [N, H, W], '
                       f'got {masks.shape}.')
    # Instances become channels so that one resampling call serves all N of them.
    work = warp_labels(tf.transpose(masks, [1, 2, 0]), inverse, out_size,
                       fill['instance_masks'], copy)
    features['instance_masks'] = tf.transpose(work, [2, 0, 1])
  if 'boxes' in features:
    features = _boxes_and_drop(features, matrix, out_size, settings)
  return features


def _boxes_and_drop(features: Features, matrix: tf.Tensor, out_size: Size,
                    settings: SyncSettings) -> Features:
  boxes = features['boxes']
  if boxes.shape.rank != 2 or boxes.shape[-1] != 4:
    raise ValueError('data/augment_warp.py: `boxes` must be boxes_xyxy [N, 4], '
                     f'got {boxes.shape}.')
  clipped, visible = transform_boxes(boxes, matrix, out_size)
  keep = settings.kept(clipped, visible)
  features['boxes'] = tf.cast(clipped, boxes.dtype)
  present = [k for k in settings.instance_keys if k in features]
  if settings.drop_mode == 'remove':
    for key in present:
      features[key] = tf.boolean_mask(features[key], keep)
    return features
  valid = features.get('instance_valid', tf.ones_like(keep))
  keep = keep & tf.cast(valid, tf.bool)
  features['instance_valid'] = tf.cast(keep, valid.dtype)
  features['boxes'] = tf.where(keep[:, tf.newaxis], features['boxes'],
                               tf.zeros_like(features['boxes']))
  if 'instance_masks' in features:
    masks = features['instance_masks']
    features['instance_masks'] = tf.where(keep[:, tf.newaxis, tf.newaxis], masks,
                                          tf.zeros_like(masks))
  return features
