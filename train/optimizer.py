"""Optimizer and learning-rate schedule built from config."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

OPTIMIZER_NAMES = ('adamw', 'sgd', 'nesterov')


def learning_rate_schedule(peak_lr: float, total_steps: int, warmup_steps: int,
                           end_lr_fraction: float = 0.0) -> optax.Schedule:
  """Linear warm-up from 0 to `peak_lr`, then cosine decay to `end_lr_fraction * peak_lr`."""
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=peak_lr * end_lr_fraction)


def step_schedule(peak_lr: float, total_steps: int, warmup_steps: int,
                  decay_at: Sequence[float], decay_factor: float = 0.1,
                  warmup_init_fraction: float = 0.0) -> optax.Schedule:
  """detectron2's WarmupMultiStepLR: linear warm-up from `warmup_init_fraction * peak_lr`,
  then `peak_lr` times `decay_factor` after each boundary; `decay_at` are fractions of
  `total_steps` (the 1x schedule's 60k and 80k of 90k are (2/3, 8/9))."""
  boundaries = {round(f * total_steps): decay_factor for f in decay_at}
  constant = optax.piecewise_constant_schedule(peak_lr, boundaries)
  if not warmup_steps:
    return constant
  warmup = optax.linear_schedule(peak_lr * warmup_init_fraction, peak_lr, warmup_steps)
  return lambda step: jnp.where(step < warmup_steps, warmup(step), constant(step))


def _decay_mask(params: Any) -> Any:
  # Weight decay on kernels only: decaying BatchNorm scales and biases only hurts.
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', '') == 'kernel', params)


def build_optimizer(opt_config: Mapping[str, Any],
                    total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`opt_config`: name ('adamw' | 'sgd' | 'nesterov'), learning_rate, warmup_steps,
  weight_decay, optional b1/b2/momentum, grad_clip_norm, end_lr_fraction; the schedule
  is warm-up + cosine, or with `decay_at` (fractions of the steps) `step_schedule`
  (optional decay_factor, warmup_init_fraction)."""
  cfg = dict(opt_config)
  if cfg.get('decay_at'):
    schedule = step_schedule(cfg['learning_rate'], total_steps, cfg.get('warmup_steps', 0),
                             cfg['decay_at'], cfg.get('decay_factor', 0.1),
                             cfg.get('warmup_init_fraction', 0.0))
  else:
    schedule = learning_rate_schedule(cfg['learning_rate'], total_steps,
                                      cfg.get('warmup_steps', 0),
                                      cfg.get('end_lr_fraction', 0.0))
  name = cfg.get('name', 'adamw')
  weight_decay = cfg.get('weight_decay', 0.0)
  if name == 'adamw':
    tx = optax.adamw(schedule, b1=cfg.get('b1', 0.9), b2=cfg.get('b2', 0.999),
                     weight_decay=weight_decay, mask=_decay_mask)
  elif name in ('sgd', 'nesterov'):
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay, mask=_decay_mask),
        optax.sgd(schedule, momentum=cfg.get('momentum', 0.9), nesterov=name == 'nesterov'))
  else:
    raise ValueError(f'config.optimizer.name={name!r}; expected one of '
                     f'{", ".join(OPTIMIZER_NAMES)}.')
  if cfg.get('grad_clip_norm'):
    tx = optax.chain(optax.clip_by_global_norm(cfg['grad_clip_norm']), tx)
  return tx, schedule
