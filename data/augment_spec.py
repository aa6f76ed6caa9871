"""What the two augmentation paths share, free of TensorFlow and of JAX.

The host path (data/augment.py, tf.data ops per example) and the device path
(data/augment_jax.py, batched JAX ops inside the jitted step) read the same policy
strings, take the same settings for the non-image keys, and split their work the same
way: a policy first *draws* (one list of stages per example), then *applies* those
draws. Feeding the host's draws to the device path must give the host's output
(tests/data/test_augment_jax.py).

Stages of one example's draws, in policy order:
  Affine(matrix, size)       a run of consecutive geometric ops fused into one forward
                             matrix [3, 3] (continuous pixel coordinates, see
                             data/augment_warp.py) and the output (height, width);
  Photometric(name, values)  one photometric op and its drawn values, e.g.
                             {'delta': ...} for brightness, {'factor': ...} for contrast.
The device path holds a batch in the same stages: matrix [B, 3, 3], values [B].
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import Any, Callable, Mapping, Sequence, Union

INSTANCE_KEYS = ('boxes', 'classes', 'instance_masks', 'is_crowd', 'instance_valid')


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity (tf.function)
class SyncSettings:
  """How geometric ops treat the non-image keys; shared by every op of one policy.

  fill: value written where a transform uncovers pixels, per key. The `mask` fill is
    the ignore label (255 by default; use e.g. 11 for CamVid's void class).
  min_box_visibility: an instance is dropped when the part of its transformed box
    inside the output frame is less than this fraction of the whole transformed box.
  min_box_size: ... or when its clipped box is narrower or shorter than this (pixels).
  drop_mode: 'remove' drops rows of every per-instance key with tf.boolean_mask (N
    becomes dynamic; pad to a fixed N afterwards; host path only); 'invalidate' keeps N
    static and sets `instance_valid` False (created if absent) and zeroes the box and
    instance mask.
  instance_keys: per-instance keys (leading dim N) dropped together with the boxes.
  """
  fill: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {'image': 0.0, 'mask': 255, 'instance_masks': 0})
  min_box_visibility: float = 0.25
  min_box_size: float = 1.0
  drop_mode: str = 'remove'
  instance_keys: tuple[str, ...] = INSTANCE_KEYS

  def __post_init__(self):
    if self.drop_mode not in ('remove', 'invalidate'):
      raise ValueError(f"data/augment_warp.py: drop_mode must be 'remove' or 'invalidate', "
                       f'got {self.drop_mode!r}.')
    if not 0.0 <= self.min_box_visibility <= 1.0:
      raise ValueError('data/augment_warp.py: min_box_visibility must lie in [0, 1], '
                       f'got {self.min_box_visibility}.')
    fill = {'image': 0.0, 'mask': 255, 'instance_masks': 0}
    fill.update(self.fill)
    object.__setattr__(self, 'fill', fill)

  @property
  def ignore_label(self) -> int:
    return int(self.fill['mask'])

  def kept(self, clipped_xyxy, visible):
    """bool [N]: the instances kept after a transform (the rules above); operators
    only, so it serves TF tensors (host path) and JAX arrays (device path) alike."""
    return ((visible >= self.min_box_visibility) & (visible > 0.0)
            & (clipped_xyxy[:, 2] - clipped_xyxy[:, 0] >= self.min_box_size)
            & (clipped_xyxy[:, 3] - clipped_xyxy[:, 1] >= self.min_box_size))


def make_settings(fill: Mapping[str, float] | None = None, min_box_visibility: float = 0.25,
                  min_box_size: float = 1.0, drop_mode: str = 'remove') -> SyncSettings:
  """The `build_policy` options of either path as settings."""
  return SyncSettings(fill=dict(fill or {}), min_box_visibility=min_box_visibility,
                      min_box_size=min_box_size, drop_mode=drop_mode)


@dataclasses.dataclass(frozen=True)
class Affine:
  """Fused geometric ops: forward matrix [3, 3] (or [B, 3, 3]) and output (H, W)."""
  matrix: Any
  size: tuple[Any, Any]


@dataclasses.dataclass(frozen=True)
class Photometric:
  """One photometric op's draws: {name: scalar} (or {name: [B]})."""
  name: str
  values: dict[str, Any]


def draw_stages(ops: Sequence[Any], seed: Any, size: Any, *, geometric: type,
                fold_in: Callable[[Any, int], Any], matmul: Callable[[Any, Any], Any]
                ) -> list[Union[Affine, Photometric]]:
  """One example's draws, for either path: op i draws from `fold_in(seed, i)`; a run of
  consecutive `geometric` ops (`.sample(seed, size) -> (matrix, size)`) fuses into one
  Affine; a photometric op (`.sample(seed) -> values`) gives a Photometric stage."""
  stages: list[Union[Affine, Photometric]] = []
  matrix = None  # pending fused geometric transform
  for index, op in enumerate(ops):
    op_seed = fold_in(seed, index)
    if isinstance(op, geometric):
      step, size = op.sample(op_seed, size)
      matrix = step if matrix is None else matmul(step, matrix)
    else:
      if matrix is not None:
        stages.append(Affine(matrix, size))
        matrix = None
      stages.append(Photometric(op.name, op.sample(op_seed)))
  if matrix is not None:
    stages.append(Affine(matrix, size))
  return stages


def apply_stages(features: dict, stages: Sequence[Union[Affine, Photometric]],
                 photometric_ops: Sequence[Any], settings: SyncSettings,
                 apply_affine: Callable[..., dict]) -> dict:
  """One example's draws applied, for either path: each Affine through `apply_affine`
  (features, matrix, size, settings), each Photometric through its op's `.apply`."""
  ops = iter(photometric_ops)
  for stage in stages:
    if isinstance(stage, Affine):
      features = apply_affine(features, stage.matrix, stage.size, settings)
    else:
      features['image'] = next(ops).apply(features['image'], stage.values)
  return features


def check(condition: bool, op: str, message: str) -> None:
  """Raises a ValueError naming the op when an argument is out of range."""
  if not condition:
    raise ValueError(f'augmentation op {op!r}: {message}')


def out_size(size, in_size):
  """An op's `size` argument (None: keep the input's; an int: square) as (height, width)."""
  if size is None:
    return in_size
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_size(name: str, size) -> None:
  if size is None:
    return
  sizes = (size,) if isinstance(size, int) else tuple(size)
  check(len(sizes) in (1, 2) and all(isinstance(s, int) and s > 0 for s in sizes), name,
        f'size must be a positive int or (height, width), got {size!r}.')


def split_spec(spec) -> list:
  """`"a|b(1)"` -> ['a', 'b(1)']; a list is returned as a list."""
  if isinstance(spec, str):
    return [s.strip() for s in spec.split('|') if s.strip()]
  return list(spec)


def parse_call(text: str, valid: str) -> tuple[str, list[Any], dict[str, Any]]:
  """`"rotate(15)"` -> ('rotate', [15], {}); raises ValueError (ending in `valid`)."""
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


def build_op(text: Any, registry, op_types: tuple, where: str) -> Any:
  """One policy item (a string like "rotate(15)" or an already built op) -> the op of
  `registry`, its arguments checked against the factory's signature."""
  valid = f'valid names: {", ".join(registry.names())}'
  if isinstance(text, op_types):
    return text
  if not isinstance(text, str):
    raise ValueError(f'{where}: each policy item must be a string like '
                     f'"rotate(15)" or a built op, got {text!r}; {valid}.')
  name, args, kwargs = parse_call(text, valid)
  if name not in registry:
    raise ValueError(f'{where}: unknown augmentation op {name!r} in {text!r}; {valid}.')
  factory = registry.get(name)
  params = inspect.signature(factory).parameters.values()
  signature = f'{name}(' + ', '.join(
      p.name if p.default is inspect.Parameter.empty else f'{p.name}={p.default!r}'
      for p in params) + ')'
  try:
    inspect.signature(factory).bind(*args, **kwargs)
  except TypeError as e:
    raise ValueError(f'{where}: bad arguments in {text!r} ({e}); expected '
                     f'{signature}; {valid}.') from e
  try:
    return factory(*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{where}: bad argument in {text!r}: {e} Expected '
                     f'{signature}; {valid}.') from e
