"""Geometric augmentation ops: each draws ONE transform for every spatial key.

Every op here returns a `GeometricOp` whose `sample(seed, size)` gives a forward
matrix [3, 3] (continuous pixel coordinates, see data/augment_warp.py) and the output
size. Output sizes are static Python ints whenever the input size is static or the op
is given a `size`, so batches form without padding. Uncovered pixels take the policy's
per-key fill (`mask`: the ignore label).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import tensorflow as tf

from data import augment_warp as warp
from data.augment_ops import OPS, GeometricOp, check, draw
from data.augment_spec import check_size, out_size
from data.augment_warp import Size


def _flip(name: str, p: float, axis: int) -> GeometricOp:
  check(0.0 <= p <= 1.0, name, f'p must lie in [0, 1], got {p}.')

  def sample(seed, size):
    extent = warp.as_float(size)[1 - axis]   # width for a left-right flip
    flip = warp.translation(extent, 0.0) if axis == 0 else warp.translation(0.0, extent)
    flip = tf.linalg.matmul(flip, warp.scaling(*((-1.0, 1.0) if axis == 0 else (1.0, -1.0))))
    return tf.where(draw(seed, 0) < p, flip, tf.eye(3)), size
  return GeometricOp(name, sample)


@OPS.register('flip_lr')
def flip_lr(p: float = 0.5) -> GeometricOp:
  """Mirrors left-right with probability p."""
  return _flip('flip_lr', p, axis=0)


@OPS.register('flip_ud')
def flip_ud(p: float = 0.5) -> GeometricOp:
  """Mirrors top-bottom with probability p."""
  return _flip('flip_ud', p, axis=1)


def _about_centre(matrix: tf.Tensor, size: Size) -> tf.Tensor:
  height, width = warp.as_float(size)
  return tf.linalg.matmul(warp.translation(width / 2, height / 2),
                          tf.linalg.matmul(matrix, warp.translation(-width / 2, -height / 2)))


@OPS.register('rotate')
def rotate(max_degrees: float) -> GeometricOp:
  """Rotates about the centre by an angle uniform in [-max_degrees, max_degrees]; same size.

  Corners uncovered by the rotation take the fill (image 0, mask ignore). Boxes become
  the axis-aligned box around the rotated box (looser than the object: the usual
  convention of detectron2 and albumentations).
  """
  check(0.0 <= max_degrees <= 180.0, 'rotate', f'max_degrees must lie in [0, 180], '
        f'got {max_degrees}.')

  def sample(seed, size):
    angle = draw(seed, 0, -max_degrees, max_degrees) * (math.pi / 180.0)
    return _about_centre(warp.rotation(angle), size), size
  return GeometricOp('rotate', sample)


@OPS.register('scale_crop')
def scale_crop(min_scale: float = 0.08, max_scale: float = 1.0,
               min_ratio: float = 3 / 4, max_ratio: float = 4 / 3,
               size: Optional[Sequence[int] | int] = None) -> GeometricOp:
  """Random resized crop: a crop of area fraction U[min_scale, max_scale] of the frame
  and aspect ratio (w/h) log-uniform in [min_ratio, max_ratio], resized to `size`
  (default: the input size). A side longer than the frame is shortened to fit.
  """
  check(0.0 < min_scale <= max_scale <= 1.0, 'scale_crop',
        f'need 0 < min_scale <= max_scale <= 1, got ({min_scale}, {max_scale}).')
  check(0.0 < min_ratio <= max_ratio, 'scale_crop',
        f'need 0 < min_ratio <= max_ratio, got ({min_ratio}, {max_ratio}).')
  check_size('scale_crop', size)

  def sample(seed, in_size):
    height, width = warp.as_float(in_size)
    area = draw(seed, 0, min_scale, max_scale) * height * width
    ratio = tf.exp(draw(seed, 1, math.log(min_ratio), math.log(max_ratio)))
    crop_w = tf.minimum(tf.sqrt(area * ratio), width)
    crop_h = tf.minimum(tf.sqrt(area / ratio), height)
    x0 = draw(seed, 2) * (width - crop_w)
    y0 = draw(seed, 3) * (height - crop_h)
    out = out_size(size, in_size)
    out_h, out_w = warp.as_float(out)
    return tf.linalg.matmul(warp.scaling(out_w / crop_w, out_h / crop_h),
                            warp.translation(-x0, -y0)), out
  return GeometricOp('scale_crop', sample)


def _offset(u: tf.Tensor, slack: tf.Tensor) -> tf.Tensor:
  """A whole-pixel offset uniform in [0, slack] (or [slack, 0] when slack < 0)."""
  return tf.sign(slack) * tf.minimum(tf.floor(u * (tf.abs(slack) + 1.0)), tf.abs(slack))


@OPS.register('random_crop')
def random_crop(height: int, width: Optional[int] = None) -> GeometricOp:
  """A crop of a fixed (height, width) at a random whole-pixel position, no scaling.

  A frame smaller than the crop is padded with the fill (the crop is placed so the
  frame lies at a random offset inside it).
  """
  width = height if width is None else width
  check_size('random_crop', (height, width))

  def sample(seed, in_size):
    in_h, in_w = warp.as_float(in_size)
    x0 = _offset(draw(seed, 0), in_w - width)
    y0 = _offset(draw(seed, 1), in_h - height)
    return warp.translation(-x0, -y0), (height, width)
  return GeometricOp('random_crop', sample)


@OPS.register('translate')
def translate(max_fraction: float, max_fraction_y: Optional[float] = None) -> GeometricOp:
  """Shifts by U[-f, f] of the width (and of the height), rounded to whole pixels."""
  fy = max_fraction if max_fraction_y is None else max_fraction_y
  check(0.0 <= max_fraction <= 1.0 and 0.0 <= fy <= 1.0, 'translate',
        f'fractions must lie in [0, 1], got ({max_fraction}, {fy}).')

  def sample(seed, size):
    height, width = warp.as_float(size)
    tx = tf.round(draw(seed, 0, -max_fraction, max_fraction) * width)
    ty = tf.round(draw(seed, 1, -fy, fy) * height)
    return warp.translation(tx, ty), size
  return GeometricOp('translate', sample)


@OPS.register('pad_crop')
def pad_crop(pad: int) -> GeometricOp:
  """Pads `pad` pixels of fill on every side, then crops the original size back at a
  random position (the CIFAR recipe): a whole-pixel shift in [-pad, pad] per axis.
  """
  check(isinstance(pad, int) and pad >= 0, 'pad_crop', f'pad must be an int >= 0, got {pad!r}.')

  def sample(seed, size):
    shift = draw(seed, 0, -pad, pad + 1, shape=(2,), dtype=tf.int32)
    return warp.translation(shift[0], shift[1]), size
  return GeometricOp('pad_crop', sample)


@OPS.register('resize')
def resize(height: int, width: Optional[int] = None) -> GeometricOp:
  """Resizes to (height, width) (bilinear image, nearest masks; no antialiasing)."""
  width = height if width is None else width
  check_size('resize', (height, width))

  def sample(seed, in_size):
    del seed  # deterministic
    in_h, in_w = warp.as_float(in_size)
    return warp.scaling(width / in_w, height / in_h), (height, width)
  return GeometricOp('resize', sample)
