"""Augmentation on the accelerator: the policy language of data/augment.py as batched JAX
ops, run inside the jitted train step (`config.augment_on = 'device'`). No TensorFlow.

`build_device_policy(spec, fill=..., ...)` takes the host's spec and options and returns
`policy(batch, key) -> batch`: `policy.draw(key, batch_size, (H, W))` gives every
example its own draws (data/augment_spec.py stages, batched: matrix [B, 3, 3], values
[B]; example b draws from `jax.random.split(key, B)[b]`, op i of it from `fold_in(.., i)`),
and `policy.apply(batch, draws)` applies them, per example under `jax.vmap`, with static
shapes. Feeding it the host's draws gives the host's output (tests/data/test_augment_jax.py):
the same conventions (data/augment_warp.py), the same resampling as the host's
`ImageProjectiveTransformV3` (bilinear image with a per-corner constant fill, nearest
labels rounded half away from zero), the same box clipping and dropping rules, and the
same single uint8 -> [0, 1] -> uint8 conversion when the policy has photometric ops.

Batch keys (all optional except `image`), B examples of one size:
  image [B, H, W, C] uint8 or float; mask [B, H, W] or [B, H, W, 1]; instance_masks
  [B, N, H, W]; boxes [B, N, 4] boxes_xyxy; instance_valid [B, N]. Other keys pass
  through. Instances are dropped with drop_mode='invalidate' only (N stays static).
Ops: flip_lr flip_ud rotate scale_crop random_crop translate pad_crop resize (geometric),
brightness contrast saturation gamma cutout (photometric); hue and noise are host-only.
The device draws come from `jax.random`, not from the host's TF seeds: a run with
augment_on='device' sees other (equally distributed) draws than one with 'host'.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from data import augment_spec
from data.augment_jax_warp import apply_affine, matmul, rotation, scaling, translation
from data.augment_spec import Affine, Photometric, SyncSettings, check, check_size, out_size
from registry import Registry

DEVICE_OPS = Registry('device augmentation op')
Batch = dict[str, jnp.ndarray]
Size = tuple[int, int]  # static (height, width)
Stage = Union[Affine, Photometric]

jax.tree_util.register_pytree_node(
    Affine, lambda a: ((a.matrix,), tuple(int(d) for d in a.size)),
    lambda size, children: Affine(children[0], size))
jax.tree_util.register_pytree_node(
    Photometric, lambda p: ((p.values,), p.name),
    lambda name, children: Photometric(name, children[0]))

# uint8 value v -> v / 255 in float32 with IEEE division (XLA would multiply by the
# reciprocal, 1 ulp off the host's division for some v).
_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)
_LUMA = (0.299, 0.587, 0.114)
_SPATIAL_KEYS = ('image', 'mask', 'instance_masks', 'boxes', 'instance_valid')


@dataclasses.dataclass(frozen=True)
class DeviceGeometricOp:
  name: str
  sample: Callable[[jax.Array, Size], tuple[jnp.ndarray, Size]]  # one example's key


@dataclasses.dataclass(frozen=True)
class DevicePhotometricOp:
  name: str
  sample: Callable[[jax.Array], dict[str, jnp.ndarray]]
  apply: Callable[[jnp.ndarray, dict[str, jnp.ndarray]], jnp.ndarray]  # [H, W, C] on [0, 1]


DeviceOp = Union[DeviceGeometricOp, DevicePhotometricOp]


def _draw(key: jax.Array, index: int, minval=0.0, maxval=1.0) -> jnp.ndarray:
  return jax.random.uniform(jax.random.fold_in(key, index), (), jnp.float32, minval, maxval)


# ----- geometric ops (their host twins: data/augment_geometric.py) -----

def _flip(name: str, p: float, axis: int) -> DeviceGeometricOp:
  check(0.0 <= p <= 1.0, name, f'p must lie in [0, 1], got {p}.')

  def sample(key, size):
    extent = float(size[1 - axis])
    flip = (matmul(translation(extent, 0.0), scaling(-1.0, 1.0)) if axis == 0
            else matmul(translation(0.0, extent), scaling(1.0, -1.0)))
    return jnp.where(_draw(key, 0) < p, flip, jnp.eye(3, dtype=jnp.float32)), size
  return DeviceGeometricOp(name, sample)


@DEVICE_OPS.register('flip_lr')
def flip_lr(p: float = 0.5) -> DeviceGeometricOp:
  return _flip('flip_lr', p, axis=0)


@DEVICE_OPS.register('flip_ud')
def flip_ud(p: float = 0.5) -> DeviceGeometricOp:
  return _flip('flip_ud', p, axis=1)


@DEVICE_OPS.register('rotate')
def rotate(max_degrees: float) -> DeviceGeometricOp:
  check(0.0 <= max_degrees <= 180.0, 'rotate', f'max_degrees must lie in [0, 180], '
        f'got {max_degrees}.')

  def sample(key, size):
    height, width = float(size[0]), float(size[1])
    angle = _draw(key, 0, -max_degrees, max_degrees) * (math.pi / 180.0)
    return matmul(translation(width / 2, height / 2),
                  matmul(rotation(angle), translation(-width / 2, -height / 2))), size
  return DeviceGeometricOp('rotate', sample)


@DEVICE_OPS.register('scale_crop')
def scale_crop(min_scale: float = 0.08, max_scale: float = 1.0, min_ratio: float = 3 / 4,
               max_ratio: float = 4 / 3, size: Optional[Sequence[int] | int] = None
               ) -> DeviceGeometricOp:
  check(0.0 < min_scale <= max_scale <= 1.0, 'scale_crop',
        f'need 0 < min_scale <= max_scale <= 1, got ({min_scale}, {max_scale}).')
  check(0.0 < min_ratio <= max_ratio, 'scale_crop',
        f'need 0 < min_ratio <= max_ratio, got ({min_ratio}, {max_ratio}).')
  check_size('scale_crop', size)

  def sample(key, in_size):
    height, width = jnp.float32(in_size[0]), jnp.float32(in_size[1])
    area = _draw(key, 0, min_scale, max_scale) * height * width
    ratio = jnp.exp(_draw(key, 1, math.log(min_ratio), math.log(max_ratio)))
    crop_w = jnp.minimum(jnp.sqrt(area * ratio), width)
    crop_h = jnp.minimum(jnp.sqrt(area / ratio), height)
    x0 = _draw(key, 2) * (width - crop_w)
    y0 = _draw(key, 3) * (height - crop_h)
    out = out_size(size, in_size)
    return matmul(scaling(jnp.float32(out[1]) / crop_w, jnp.float32(out[0]) / crop_h),
                  translation(-x0, -y0)), out
  return DeviceGeometricOp('scale_crop', sample)


def _offset(u: jnp.ndarray, slack: float) -> jnp.ndarray:
  """A whole-pixel offset uniform in [0, slack] (or [slack, 0] when slack < 0)."""
  return np.sign(slack) * jnp.minimum(jnp.floor(u * (abs(slack) + 1.0)), abs(slack))


@DEVICE_OPS.register('random_crop')
def random_crop(height: int, width: Optional[int] = None) -> DeviceGeometricOp:
  width = height if width is None else width
  check_size('random_crop', (height, width))

  def sample(key, in_size):
    x0 = _offset(_draw(key, 0), float(in_size[1] - width))
    y0 = _offset(_draw(key, 1), float(in_size[0] - height))
    return translation(-x0, -y0), (height, width)
  return DeviceGeometricOp('random_crop', sample)


@DEVICE_OPS.register('translate')
def translate(max_fraction: float, max_fraction_y: Optional[float] = None
              ) -> DeviceGeometricOp:
  fy = max_fraction if max_fraction_y is None else max_fraction_y
  check(0.0 <= max_fraction <= 1.0 and 0.0 <= fy <= 1.0, 'translate',
        f'fractions must lie in [0, 1], got ({max_fraction}, {fy}).')

  def sample(key, size):
    tx = jnp.round(_draw(key, 0, -max_fraction, max_fraction) * jnp.float32(size[1]))
    ty = jnp.round(_draw(key, 1, -fy, fy) * jnp.float32(size[0]))
    return translation(tx, ty), size
  return DeviceGeometricOp('translate', sample)


@DEVICE_OPS.register('pad_crop')
def pad_crop(pad: int) -> DeviceGeometricOp:
  check(isinstance(pad, int) and pad >= 0, 'pad_crop', f'pad must be an int >= 0, got {pad!r}.')

  def sample(key, size):
    shift = jax.random.randint(jax.random.fold_in(key, 0), (2,), -pad, pad + 1)
    return translation(shift[0], shift[1]), size
  return DeviceGeometricOp('pad_crop', sample)


@DEVICE_OPS.register('resize')
def resize(height: int, width: Optional[int] = None) -> DeviceGeometricOp:
  width = height if width is None else width
  check_size('resize', (height, width))

  def sample(key, in_size):
    del key  # deterministic
    return scaling(width / in_size[1], height / in_size[0]), (height, width)
  return DeviceGeometricOp('resize', sample)


# ----- photometric ops (their host twins: data/augment_photometric.py) -----

def _clip(image):
  return jnp.clip(image, 0.0, 1.0)


def _strength(name: str, amount: float) -> Callable[[jax.Array], dict]:
  check(0.0 <= amount <= 1.0, name, f'the strength must lie in [0, 1], got {amount}.')
  return lambda key: {'factor': _draw(key, 0, 1.0 - amount, 1.0 + amount)}


@DEVICE_OPS.register('brightness')
def brightness(max_delta: float) -> DevicePhotometricOp:
  check(0.0 <= max_delta <= 1.0, 'brightness',
        f'the strength must lie in [0, 1], got {max_delta}.')
  return DevicePhotometricOp('brightness',
                             lambda key: {'delta': _draw(key, 0, -max_delta, max_delta)},
                             lambda image, v: _clip(image + v['delta']))


@DEVICE_OPS.register('contrast')
def contrast(amount: float) -> DevicePhotometricOp:
  def apply(image, v):
    mean = jnp.mean(image, axis=(0, 1), keepdims=True)
    return _clip(image * v['factor'] + mean * (1.0 - v['factor']))
  return DevicePhotometricOp('contrast', _strength('contrast', amount), apply)


@DEVICE_OPS.register('saturation')
def saturation(amount: float) -> DevicePhotometricOp:
  def apply(image, v):
    if image.shape[-1] not in (1, 3):
      raise ValueError(f"augmentation op 'saturation': `image` must have 1 or 3 channels "
                       f'[H, W, C], got shape {image.shape}.')
    if image.shape[-1] == 1:  # gray: no chroma to scale
      return image
    gray = jnp.sum(image * jnp.asarray(_LUMA, jnp.float32), axis=-1, keepdims=True)
    return _clip(gray + (image - gray) * v['factor'])
  return DevicePhotometricOp('saturation', _strength('saturation', amount), apply)


@DEVICE_OPS.register('gamma')
def gamma(min_gamma: float = 0.8, max_gamma: float = 1.25) -> DevicePhotometricOp:
  check(0.0 < min_gamma <= max_gamma, 'gamma',
        f'need 0 < min_gamma <= max_gamma, got ({min_gamma}, {max_gamma}).')
  return DevicePhotometricOp(
      'gamma', lambda key: {'gamma': jnp.exp(_draw(key, 0, math.log(min_gamma),
                                                   math.log(max_gamma)))},
      lambda image, v: _clip(jnp.power(jnp.maximum(image, 0.0), v['gamma'])))


@DEVICE_OPS.register('cutout')
def cutout(size: float = 0.25, value: float = 0.0, p: float = 1.0) -> DevicePhotometricOp:
  check(0.0 < size <= 1.0, 'cutout', f'size must lie in (0, 1], got {size}.')
  check(0.0 <= value <= 1.0, 'cutout', f'value must lie in [0, 1], got {value}.')
  check(0.0 <= p <= 1.0, 'cutout', f'p must lie in [0, 1], got {p}.')

  def apply(image, v):
    height, width = image.shape[0], image.shape[1]
    side = jnp.round(jnp.float32(size) * min(height, width))
    cy, cx = v['cy'] * height, v['cx'] * width
    rows = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
    cols = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
    inside = (jnp.abs(rows - cy) < side / 2) & (jnp.abs(cols - cx) < side / 2) & (v['coin'] < p)
    return jnp.where(inside[..., None], jnp.asarray(value, image.dtype), image)
  return DevicePhotometricOp(
      'cutout', lambda key: {'cy': _draw(key, 0), 'cx': _draw(key, 1), 'coin': _draw(key, 2)},
      apply)


# ----- the policy -----

@dataclasses.dataclass(frozen=True, eq=False)
class DevicePolicy:
  """`policy(batch, key) -> batch`, jittable; see the module docstring."""
  ops: tuple[DeviceOp, ...]
  settings: SyncSettings = dataclasses.field(default_factory=SyncSettings)

  def __call__(self, batch: Mapping[str, jnp.ndarray], key: jax.Array) -> Batch:
    if not self.ops:
      return dict(batch)
    image = _check_image(batch)
    return self.apply(batch, self.draw(key, image.shape[0], image.shape[1:3]))

  def draw(self, key: jax.Array, batch_size: int, size: Size) -> list[Stage]:
    """The batch's draws: stages with a leading axis [B] (example b from split(key)[b])."""
    size = (int(size[0]), int(size[1]))
    return jax.vmap(lambda k: self._draw_one(k, size))(jax.random.split(key, batch_size))

  def _draw_one(self, key: jax.Array, size: Size) -> list[Stage]:
    return augment_spec.draw_stages(self.ops, key, size, geometric=DeviceGeometricOp,
                                    fold_in=jax.random.fold_in, matmul=matmul)

  def apply(self, batch: Mapping[str, jnp.ndarray], stages: Sequence[Stage]) -> Batch:
    """Applies the batch's draws (from `draw`, or the host's stacked per example)."""
    batch = dict(batch)
    image = _check_image(batch)
    if 'boxes' in batch and self.settings.drop_mode != 'invalidate':
      raise ValueError("data/augment_jax.py: a batch with `boxes` needs drop_mode="
                       "'invalidate' on the device (instance counts stay static); got "
                       f'{self.settings.drop_mode!r}.')
    settings = self.settings
    photometric = [op for op in self.ops if isinstance(op, DevicePhotometricOp)]
    integer = jnp.issubdtype(image.dtype, jnp.integer)
    if photometric and integer:
      maximum = float(jnp.iinfo(image.dtype).max)
      settings = dataclasses.replace(
          settings, fill={**settings.fill, 'image': settings.fill['image'] / maximum})

    def one(example, example_stages):
      if photometric:
        example['image'] = _to_unit(example['image'])
      example = augment_spec.apply_stages(example, example_stages, photometric, settings,
                                          apply_affine)
      if photometric:
        example['image'] = _from_unit(example['image'], image.dtype)
      return example

    spatial = {k: batch[k] for k in _SPATIAL_KEYS if k in batch}
    batch.update(jax.vmap(one)(spatial, list(stages)))
    return batch

  def __str__(self) -> str:
    return '|'.join(op.name for op in self.ops)


def _check_image(batch: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
  if 'image' not in batch or batch['image'].ndim != 4:
    raise ValueError('data/augment_jax.py: the batch needs `image` [B, H, W, C]; got '
                     f'{ {k: tuple(v.shape) for k, v in batch.items()} }.')
  return batch['image']


def _to_unit(image: jnp.ndarray) -> jnp.ndarray:
  if image.dtype == jnp.uint8:
    return jnp.asarray(_UNIT)[image.astype(jnp.int32)]
  if jnp.issubdtype(image.dtype, jnp.integer):
    return image.astype(jnp.float32) / jnp.float32(jnp.iinfo(image.dtype).max)
  return image.astype(jnp.float32)


def _from_unit(image: jnp.ndarray, dtype) -> jnp.ndarray:
  if jnp.issubdtype(dtype, jnp.integer):
    maximum = float(jnp.iinfo(dtype).max)
    image = jnp.clip(jnp.round(image * maximum), 0.0, maximum)
  return image.astype(dtype)


def build_device_policy(spec: Union[str, Sequence], *,
                        fill: Optional[Mapping[str, float]] = None,
                        min_box_visibility: float = 0.25, min_box_size: float = 1.0,
                        drop_mode: str = 'remove') -> DevicePolicy:
  """The device twin of `data.augment.build_policy(spec, ...)` (same spec and options).

  Raises ValueError, listing the device op names, for an unknown or host-only op.
  """
  settings = augment_spec.make_settings(fill, min_box_visibility, min_box_size, drop_mode)
  ops = tuple(augment_spec.build_op(item, DEVICE_OPS, (DeviceGeometricOp, DevicePhotometricOp),
                                    'data/augment_jax.py')
              for item in augment_spec.split_spec(spec))
  return DevicePolicy(ops, settings)
