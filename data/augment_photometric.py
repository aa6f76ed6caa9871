"""Photometric augmentation ops: they change `image` only, never masks or boxes.

Each works on a float32 image [H, W, C] on the [0, 1] scale (a policy with any
photometric op converts uint8 by /255 once at its start and rounds back once at its
end; float images are taken to be on [0, 1] already)
and clips its result to [0, 1], as a camera would saturate.

One-channel images: `saturation` and `hue` are no-ops, on purpose: a gray image has
no chroma to scale or rotate (its HSV saturation is 0), so there is nothing to change;
this lets one policy serve RGB and grayscale data (Fashion-MNIST is [28, 28, 1]).
Other channel counts than 1 or 3 raise a ValueError.
"""
from __future__ import annotations

import math

import tensorflow as tf

from data.augment_ops import OPS, PhotometricOp, check, draw

# ITU-R BT.601 luma weights, as PIL's ImageEnhance.Color and torchvision use.
_LUMA = (0.299, 0.587, 0.114)


def _clip(image: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(image, 0.0, 1.0)


def _channels(image: tf.Tensor, op: str) -> int:
  channels = image.shape[-1]
  if channels not in (1, 3):
    raise ValueError(f'augmentation op {op!r}: `image` must have 1 or 3 channels '
                     f'[H, W, C], got shape {image.shape}.')
  return channels


def _factor(name: str, amount: float) -> None:
  check(0.0 <= amount <= 1.0, name, f'the strength must lie in [0, 1], got {amount}.')


def _factor_draw(amount: float):
  return lambda seed: {'factor': draw(seed, 0, 1.0 - amount, 1.0 + amount)}


@OPS.register('brightness')
def brightness(max_delta: float) -> PhotometricOp:
  """Illumination: adds U[-max_delta, max_delta] (on the [0, 1] scale) to every pixel."""
  _factor('brightness', max_delta)
  return PhotometricOp('brightness',
                       lambda seed: {'delta': draw(seed, 0, -max_delta, max_delta)},
                       lambda image, v: _clip(image + v['delta']))


@OPS.register('contrast')
def contrast(amount: float) -> PhotometricOp:
  """Scales each channel's deviation from its mean by U[1 - amount, 1 + amount]."""
  _factor('contrast', amount)

  def apply(image, v):
    factor = v['factor']
    mean = tf.reduce_mean(image, axis=(0, 1), keepdims=True)
    return _clip(image * factor + mean * (1.0 - factor))  # (x - mean) * f + mean
  return PhotometricOp('contrast', _factor_draw(amount), apply)


@OPS.register('saturation')
def saturation(amount: float) -> PhotometricOp:
  """Blends with the gray image by U[1 - amount, 1 + amount] (0 = gray). 1 channel: no-op."""
  _factor('saturation', amount)

  def apply(image, v):
    if _channels(image, 'saturation') == 1:
      return image
    gray = tf.reduce_sum(image * tf.constant(_LUMA), axis=-1, keepdims=True)
    return _clip(gray + (image - gray) * v['factor'])
  return PhotometricOp('saturation', _factor_draw(amount), apply)


@OPS.register('hue')
def hue(max_delta: float) -> PhotometricOp:
  """Rotates hue by U[-max_delta, max_delta] of a full turn (0.5 = 180 deg). 1 channel: no-op."""
  check(0.0 <= max_delta <= 0.5, 'hue', f'max_delta must lie in [0, 0.5], got {max_delta}.')

  def apply(image, v):
    if _channels(image, 'hue') == 1:
      return image
    return _clip(tf.image.adjust_hue(image, v['delta']))
  return PhotometricOp('hue', lambda seed: {'delta': draw(seed, 0, -max_delta, max_delta)},
                       apply)


@OPS.register('gamma')
def gamma(min_gamma: float = 0.8, max_gamma: float = 1.25) -> PhotometricOp:
  """image ** g, g log-uniform in [min_gamma, max_gamma] (< 1 brightens shadows)."""
  check(0.0 < min_gamma <= max_gamma, 'gamma',
        f'need 0 < min_gamma <= max_gamma, got ({min_gamma}, {max_gamma}).')

  def sample(seed):
    return {'gamma': tf.exp(draw(seed, 0, math.log(min_gamma), math.log(max_gamma)))}
  return PhotometricOp('gamma', sample,
                       lambda image, v: _clip(tf.pow(tf.maximum(image, 0.0), v['gamma'])))


@OPS.register('noise')
def noise(std: float) -> PhotometricOp:
  """Adds i.i.d. Gaussian noise of standard deviation `std` (on the [0, 1] scale)."""
  check(0.0 <= std <= 1.0, 'noise', f'std must lie in [0, 1], got {std}.')

  def apply(image, v):  # the draw is the noise field's seed: its shape is the image's
    return _clip(image + std * tf.random.stateless_normal(tf.shape(image), v['seed']))
  return PhotometricOp('noise',
                       lambda seed: {'seed': tf.random.experimental.stateless_fold_in(seed, 0)},
                       apply)


@OPS.register('cutout')
def cutout(size: float = 0.25, value: float = 0.0, p: float = 1.0) -> PhotometricOp:
  """Occlusion (cutout / random erasing): with probability p, a square of side
  round(size * min(H, W)) centred uniformly in the frame (it may stick out) is set to
  `value` (on the [0, 1] scale). Masks and boxes are kept: the object is still there,
  only hidden, as in DeVries & Taylor 2017.
  """
  check(0.0 < size <= 1.0, 'cutout', f'size must lie in (0, 1], got {size}.')
  check(0.0 <= value <= 1.0, 'cutout', f'value must lie in [0, 1], got {value}.')
  check(0.0 <= p <= 1.0, 'cutout', f'p must lie in [0, 1], got {p}.')

  def sample(seed):  # the centre as fractions of the frame, and the coin
    return {'cy': draw(seed, 0), 'cx': draw(seed, 1), 'coin': draw(seed, 2)}

  def apply(image, v):
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    side = tf.round(size * tf.minimum(height, width))
    cy, cx = v['cy'] * height, v['cx'] * width
    rows = tf.range(height)[:, tf.newaxis] + 0.5
    cols = tf.range(width)[tf.newaxis, :] + 0.5
    inside = ((tf.abs(rows - cy) < side / 2) & (tf.abs(cols - cx) < side / 2)
              & (v['coin'] < p))
    return tf.where(inside[..., tf.newaxis], tf.cast(value, image.dtype), image)
  return PhotometricOp('cutout', sample, apply)
