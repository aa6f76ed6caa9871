"""The augmentation-op registry, the two kinds of op, and stateless random draws.

A registered entry is a factory: `OPS.get('rotate')(15)` checks its arguments in
Python and returns a `GeometricOp` or a `PhotometricOp`. A policy (data/augment.py)
hands each op its own seed, folded from the example seed and the op's position.

- GeometricOp.sample(seed, size) -> (matrix [3, 3], out_size): it only draws a
  transform; data/augment_warp.py applies it to every spatial key, so image, mask,
  instance masks and boxes cannot drift apart. Consecutive geometric ops are fused
  into one matrix and resampled once.
- PhotometricOp.sample(seed) -> values (a dict of tensors: the op's draws) and
  PhotometricOp.apply(image, values) -> image: float32 [H, W, C] on the [0, 1] scale
  (uint8 is divided by 255 at the start of a policy that has photometric ops, and
  geometric ops then resample that float image, so it is rounded only once, at the end);
  only `image` is ever touched. Drawing apart from applying lets the device path
  (data/augment_jax.py) be fed the host's draws.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from data.augment_spec import check  # noqa: F401  (the ops' argument checks)
from data.augment_warp import Size
from registry import Registry

OPS = Registry('augmentation op')


@dataclasses.dataclass(frozen=True)
class GeometricOp:
  name: str
  sample: Callable[[tf.Tensor, Size], tuple[tf.Tensor, Size]]


@dataclasses.dataclass(frozen=True)
class PhotometricOp:
  name: str
  sample: Callable[[tf.Tensor], dict[str, tf.Tensor]]
  apply: Callable[[tf.Tensor, dict[str, tf.Tensor]], tf.Tensor]


def draw(seed: tf.Tensor, index: int, minval=0.0, maxval=1.0, shape=(),
         dtype=tf.float32) -> tf.Tensor:
  """The `index`-th independent uniform draw of an op from its seed [2]."""
  sub = tf.random.experimental.stateless_fold_in(seed, index)
  return tf.random.stateless_uniform(shape, sub, minval=minval, maxval=maxval, dtype=dtype)


