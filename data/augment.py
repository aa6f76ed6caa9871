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

import ast
import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import tensorflow as tf

from data import augment_geometric, augment_photometric  # noqa: F401  (register the ops)
from data.augment_ops import OPS, GeometricOp, PhotometricOp
from data.augment_warp import Features, SyncSettings, apply_affine, image_size

Op = Union[GeometricOp, PhotometricOp]
Spec = Union[str, Sequence[Union[str, Op]]]


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity (tf.function)
class Policy:
  """An immutable list of ops and the settings for non-image keys; call it per example."""
  ops: tuple[Op, ...]
  settings: SyncSettings = dataclasses.field(default_factory=SyncSettings)

  def __call__(self, features: Features, seed: tf.Tensor) -> Features:
    features = dict(features)
    seed = tf.convert_to_tensor(seed)
    if not self.ops:
      return features
    size = image_size(features)
    dtype = features['image'].dtype
    settings = self.settings
    photometric = any(isinstance(op, PhotometricOp) for op in self.ops)
    if photometric:
      # One conversion to float32 [0, 1] for the whole policy, one rounding at the end.
      features['image'] = to_unit(features['image'])
      if dtype.is_integer:
        settings = dataclasses.replace(
            settings, fill={**settings.fill, 'image': settings.fill['image'] / dtype.max})
    matrix = None  # pending fused geometric transform
    for index, op in enumerate(self.ops):
      op_seed = tf.random.experimental.stateless_fold_in(seed, index)
      if isinstance(op, GeometricOp):
        step, size = op.sample(op_seed, size)
        matrix = step if matrix is None else tf.linalg.matmul(step, matrix)
      else:
        if matrix is not None:
          features, matrix = apply_affine(features, matrix, size, settings), None
        features['image'] = op.apply(features['image'], op_seed)
    if matrix is not None:
      features = apply_affine(features, matrix, size, settings)
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
  if isinstance(spec, str):
    items = [s.strip() for s in spec.split('|') if s.strip()]
  else:
    items = list(spec)
  settings = SyncSettings(fill=dict(fill or {}), min_box_visibility=min_box_visibility,
                          min_box_size=min_box_size, drop_mode=drop_mode)
  ops = tuple(item if isinstance(item, (GeometricOp, PhotometricOp)) else parse_op(item)
              for item in items)
  return Policy(ops, settings)


def parse_op(text: str) -> Op:
  """`"rotate(15)"` or `"scale_crop(0.8, 1.0, size=(224, 224))"` -> the built op."""
  valid = f'valid names: {", ".join(OPS.names())}'
  if not isinstance(text, str):
    raise ValueError(f'data/augment.py: each policy item must be a string like '
                     f'"rotate(15)" or a built op, got {text!r}; {valid}.')
  name, args, kwargs = _parse_call(text, valid)
  if name not in OPS:
    raise ValueError(f'data/augment.py: unknown augmentation op {name!r} in {text!r}; {valid}.')
  factory = OPS.get(name)
  params = inspect.signature(factory).parameters.values()
  signature = f'{name}(' + ', '.join(
      p.name if p.default is inspect.Parameter.empty else f'{p.name}={p.default!r}'
      for p in params) + ')'
  try:
    inspect.signature(factory).bind(*args, **kwargs)
  except TypeError as e:
    raise ValueError(f'data/augment.py: bad arguments in {text!r} ({e}); expected '
                     f'{signature}; {valid}.') from e
  try:
    return factory(*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f'data/augment.py: bad argument in {text!r}: {e} Expected '
                     f'{signature}; {valid}.') from e


def _parse_call(text: str, valid: str) -> tuple[str, list[Any], dict[str, Any]]:
  try:
    node = ast.parse(text.strip(), mode='eval').body
    if isinstance(node, ast.Name):
      return node.id, [], {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      args = [ast.literal_eval(a) for a in node.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      return node.func.id, args, kwargs
  except (SyntaxError, ValueError):
    pass
  raise ValueError(f'data/augment.py: cannot parse augmentation op {text!r}; expected '
                   f'name or name(literal, ..., key=literal); {valid}.')
