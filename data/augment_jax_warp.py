"""One affine transform applied to every spatial key of ONE example, in JAX: the device
twin of data/augment_warp.py (same conventions; read its docstring), vmapped over a
batch by data/augment_jax.py.

Resampling reproduces TensorFlow's `ImageProjectiveTransformV3` with fill_mode
'CONSTANT', which the host path uses: output pixel (i, j) reads input index point
to_index(j, i) where to_index = T(-0.5) . inverse . T(0.5); bilinear reads the four
neighbours, each one outside the frame replaced by the fill, and weights them as TF
does; nearest rounds half away from zero (C++ std::round) and fills outside.
Matrices are products written out elementwise, so a GPU never computes them in TF32.
"""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp

from data.augment_spec import SyncSettings

Example = dict[str, jnp.ndarray]
Size = tuple[int, int]  # static (height, width)


def _matrix(rows) -> jnp.ndarray:
  return jnp.stack([jnp.stack([jnp.asarray(v, jnp.float32) for v in row]) for row in rows])


def translation(tx, ty) -> jnp.ndarray:
  return _matrix([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def scaling(sx, sy) -> jnp.ndarray:
  return _matrix([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def rotation(radians) -> jnp.ndarray:
  """Counter-clockwise as seen on screen (y points down) about the origin."""
  c, s = jnp.cos(radians), jnp.sin(radians)
  return _matrix([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def matmul(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """[3, 3] @ [3, 3] in full float32."""
  return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)


def affine_inverse(matrix: jnp.ndarray) -> jnp.ndarray:
  """The inverse of an affine [3, 3] (last row 0, 0, 1), in closed form."""
  a, b, c = matrix[0, 0], matrix[0, 1], matrix[0, 2]
  d, e, f = matrix[1, 0], matrix[1, 1], matrix[1, 2]
  det = a * e - b * d
  return _matrix([[e / det, -b / det, (b * f - c * e) / det],
                  [-d / det, a / det, (c * d - a * f) / det], [0.0, 0.0, 1.0]])


def source_points(inverse: jnp.ndarray, out_size: Size) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(x, y) [H', W'] input index points (pixel centres at integers) of every output pixel."""
  to_index = matmul(translation(-0.5, -0.5), matmul(inverse, translation(0.5, 0.5)))
  rows, cols = jnp.meshgrid(jnp.arange(out_size[0], dtype=jnp.float32),
                            jnp.arange(out_size[1], dtype=jnp.float32), indexing='ij')
  x = to_index[0, 0] * cols + to_index[0, 1] * rows + to_index[0, 2]
  y = to_index[1, 0] * cols + to_index[1, 1] * rows + to_index[1, 2]
  return x, y


def _read(x: jnp.ndarray, rows: jnp.ndarray, cols: jnp.ndarray, fill) -> jnp.ndarray:
  """x [H, W, C] at integer-valued float (rows, cols) [H', W']; `fill` outside."""
  height, width = x.shape[0], x.shape[1]
  inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
  r = jnp.clip(rows, 0, height - 1).astype(jnp.int32)
  c = jnp.clip(cols, 0, width - 1).astype(jnp.int32)
  return jnp.where(inside[..., None], x[r, c], jnp.asarray(fill, x.dtype))


def warp_bilinear(x: jnp.ndarray, inverse: jnp.ndarray, out_size: Size, fill: float
                  ) -> jnp.ndarray:
  """float32 [H, W, C] -> [H', W', C], bilinear, each outside neighbour = fill."""
  sx, sy = source_points(inverse, out_size)
  x0, y0 = jnp.floor(sx), jnp.floor(sy)
  x1, y1 = x0 + 1.0, y0 + 1.0
  wx0, wx1 = (x1 - sx)[..., None], (sx - x0)[..., None]
  top = wx0 * _read(x, y0, x0, fill) + wx1 * _read(x, y0, x1, fill)
  bottom = wx0 * _read(x, y1, x0, fill) + wx1 * _read(x, y1, x1, fill)
  return (y1 - sy)[..., None] * top + (sy - y0)[..., None] * bottom


def warp_nearest(labels: jnp.ndarray, inverse: jnp.ndarray, out_size: Size, fill
                 ) -> jnp.ndarray:
  """[H, W, C] labels of any dtype -> [H', W', C]: values copied, never blended."""
  sx, sy = source_points(inverse, out_size)

  def round_half_away(v):
    return jnp.sign(v) * jnp.floor(jnp.abs(v) + 0.5)
  return _read(labels, round_half_away(sy), round_half_away(sx), fill)


def warp_image(image: jnp.ndarray, inverse: jnp.ndarray, out_size: Size, fill: float
               ) -> jnp.ndarray:
  """Bilinear in float32; integer images rounded (half to even, as tf.round) and clipped."""
  out = warp_bilinear(image.astype(jnp.float32), inverse, out_size, fill)
  if jnp.issubdtype(image.dtype, jnp.integer):
    info = jnp.iinfo(image.dtype)
    out = jnp.clip(jnp.round(out), info.min, info.max)
  return out.astype(image.dtype)


def transform_boxes(boxes: jnp.ndarray, matrix: jnp.ndarray, out_size: Size
                    ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """boxes_xyxy [N, 4] -> (clipped boxes [N, 4], visible fraction [N]); as the host's."""
  boxes = boxes.astype(jnp.float32)
  x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
  xs = jnp.stack([x0, x1, x0, x1], axis=-1)
  ys = jnp.stack([y0, y0, y1, y1], axis=-1)
  tx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
  ty = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
  whole = jnp.stack([tx.min(-1), ty.min(-1), tx.max(-1), ty.max(-1)], axis=-1)
  height, width = float(out_size[0]), float(out_size[1])
  clipped = jnp.clip(whole, 0.0, jnp.asarray([width, height, width, height], jnp.float32))

  def area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  total = area(whole)
  visible = jnp.where(total == 0, 0.0, area(clipped) / jnp.where(total == 0, 1.0, total))
  return clipped, visible


def apply_affine(example: Mapping[str, jnp.ndarray], matrix: jnp.ndarray, out_size: Size,
                 settings: SyncSettings) -> Example:
  """One forward matrix [3, 3] on every spatial key of one example (drop_mode
  'invalidate': dropped instances get instance_valid False, a zero box and mask)."""
  example = dict(example)
  inverse = affine_inverse(matrix)
  fill = settings.fill
  example['image'] = warp_image(example['image'], inverse, out_size, fill['image'])
  if 'mask' in example:
    mask = example['mask']
    if mask.ndim not in (2, 3):
      raise ValueError('data/augment_jax_warp.py: `mask` must be [B, H, W] or [B, H, W, 1], '
                       f'got {mask.shape} per example.')
    work = mask if mask.ndim == 3 else mask[..., None]
    work = warp_nearest(work, inverse, out_size, fill['mask'])
    example['mask'] = work if mask.ndim == 3 else work[..., 0]
  if 'instance_masks' in example:
    masks = example['instance_masks']
    if masks.ndim != 3:
      raise ValueError('data/augment_jax_warp.py: `instance_masks` must be [B, N, H, W], '
                       f'got {masks.shape} per example.')
    work = warp_nearest(jnp.transpose(masks, (1, 2, 0)), inverse, out_size,
                        fill['instance_masks'])
    example['instance_masks'] = jnp.transpose(work, (2, 0, 1))
  if 'boxes' in example:
    boxes = example['boxes']
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
      raise ValueError('data/augment_jax_warp.py: `boxes` must be boxes_xyxy [B, N, 4], '
                       f'got {boxes.shape} per example.')
    clipped, visible = transform_boxes(boxes, matrix, out_size)
    keep = settings.kept(clipped, visible)
    valid = example.get('instance_valid', jnp.ones_like(keep))
    keep = keep & valid.astype(bool)
    example['instance_valid'] = keep.astype(valid.dtype)
    example['boxes'] = jnp.where(keep[:, None], clipped.astype(boxes.dtype), 0)
    if 'instance_masks' in example:
      masks = example['instance_masks']
      example['instance_masks'] = jnp.where(keep[:, None, None], masks,
                                            jnp.zeros_like(masks))
  return example
