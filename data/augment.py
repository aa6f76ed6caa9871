"""Augmentation policies from a config string: `build_policy("flip_lr|rotate(15)|...")`.

A policy is `policy(features: dict, seed: tf.Tensor [2] int) -> dict`, the `augment_fn`
of `data.pipeline.train_batches`: it runs inside `tf.data.Dataset.map` (graph mode, no
per-example Python). Op i of the policy draws from
`stateless_fold_in(seed, i)`, where the pipeline derives `seed` from (global seed,
epoch, example index): the same seed gives the same output on every run, and two
examples (or two ops) never share a draw.

Geometric ops (data/augment_geometric.py) move `image`, `mask`, `instance_masks` and
`boxes` together from one draw (conventions in data/augment_warp.py: boxes are
`boxes_xyxy` absolute float32 pixels [N, 4]); a run of consecutive geometric ops is
fused into one matrix and resampled once, so the image is interpolated once and
content an intermediate frame would have cut off stays if the final frame shows it.
Photometric ops (data/augment_photometric.py) touch `image` only.

Ops, as `name(arguments)` in the spec (defaults in the op's docstring):
  geometric: flip_lr(p) flip_ud(p) rotate(max_degrees) scale_crop(min_scale, max_scale,
    min_ratio, max_ratio, size) random_crop(height, width) translate(max_fraction)
    pad_crop(pad) resize(height, width)
  photometric: brightness(max_delta) contrast(amount) saturation(amount) hue(max_delta)
    gamma(min_gamma, max_gamma) noise(std) cutout(size, value, p)
Example: "flip_lr|rotate(15)|scale_crop(0.8, 1.0)|brightness(0.2)|contrast(0.2)".
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence, Union

import tensorflow as tf

from data import augment_geometric, augment_photometric  # noqa: F401  (register the ops)
from data import augment_spec
from data.augment_ops import OPS, GeometricOp, PhotometricOp
from data.augment_spec import Affine, Photometric
from data.augment_warp import Features, Size, SyncSettings, apply_affine, image_size

Op = Union[GeometricOp, PhotometricOp]
Spec = Union[str, Sequence[Union[str, Op]]]
Stage = Union[Affine, Photometric]


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity (tf.function)
class Policy:
  """An immutable list of ops and the settings for non-image keys; call it per example.

  `policy(features, seed)` is `policy.apply(features, policy.draw(seed, size))`: the
  draws (data/augment_spec.py stages: fused matrices and photometric values) are what
  the device path (data/augment_jax.py) can be fed to reproduce this output.
  """
  ops: tuple[Op, ...]
  settings: SyncSettings = dataclasses.field(default_factory=SyncSettings)

  def __call__(self, features: Features, seed: tf.Tensor) -> Features:
    if not self.ops:
      return dict(features)
    return self.apply(features, self.draw(tf.convert_to_tensor(seed), image_size(features)))

  def draw(self, seed: tf.Tensor, size: Size) -> list[Stage]:
    """One example's draws from its seed [2] and image (H, W): op i draws from
    `stateless_fold_in(seed, i)`; consecutive geometric ops fuse into one Affine."""
    return augment_spec.draw_stages(self.ops, seed, size, geometric=GeometricOp,
                                    fold_in=tf.random.experimental.stateless_fold_in,
                                    matmul=tf.linalg.matmul)

  def apply(self, features: Features, stages: Sequence[Stage]) -> Features:
    """Applies one example's draws (from `draw`) to its features."""
    features = dict(features)
    dtype = features['image'].dtype
    settings = self.settings
    photometric = [op for op in self.ops if isinstance(op, PhotometricOp)]
    if photometric:
      # One conversion to float32 [0, 1] for the whole policy, one rounding at the end.
      features['image'] = to_unit(features['image'])
      if dtype.is_integer:
        settings = dataclasses.replace(
            settings, fill={**settings.fill, 'image': settings.fill['image'] / dtype.max})
    features = augment_spec.apply_stages(features, stages, photometric, settings, apply_affine)
    if photometric:
      features['image'] = from_unit(features['image'], dtype)
    return features

  def __str__(self) -> str:
    return '|'.join(op.name for op in self.ops)


def to_unit(image: tf.Tensor) -> tf.Tensor:
  """Image of any dtype -> float32 on [0, 1] (integers divided by their dtype's max)."""
  if image.dtype.is_integer:
    return tf.cast(image, tf.float32) / float(image.dtype.max)
  return tf.cast(image, tf.float32)


def from_unit(image: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  """Inverse of `to_unit`: rounds and saturates for integer dtypes."""
  if dtype.is_integer:
    image = tf.clip_by_value(tf.round(image * float(dtype.max)), 0.0, float(dtype.max))
  return tf.cast(image, dtype)


def build_policy(spec: Spec, *, fill: Optional[Mapping[str, float]] = None,
                 min_box_visibility: float = 0.25, min_box_size: float = 1.0,
                 drop_mode: str = 'remove') -> Callable[[Features, tf.Tensor], Features]:
  """A policy from `"op|op(args)|..."` or a list of such strings (or built ops).

  fill: per-key fill for uncovered pixels, merged over {'image': 0, 'mask': 255,
    'instance_masks': 0}; the `mask` fill is the ignore label.
  min_box_visibility, min_box_size, drop_mode: when and how instances are dropped
    (see `data.augment_warp.SyncSettings`).
  Raises ValueError, listing the valid op names, for an unknown name or bad argument.
  An empty spec ('' or []) gives the identity policy.
  """
  settings = augment_spec.make_settings(fill, min_box_visibility, min_box_size, drop_mode)
  ops = tuple(parse_op(item) for item in augment_spec.split_spec(spec))
  return Policy(ops, settings)


def parse_op(text: Union[str, Op]) -> Op:
  """`"rotate(15)"` or `"scale_crop(0.8, 1.0, size=(224, 224))"` -> the built op."""
  return augment_spec.build_op(text, OPS, (GeometricOp, PhotometricOp), 'data/augment.py')
