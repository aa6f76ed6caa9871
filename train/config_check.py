"""Checks a config before any work: numbers in range, names in their registries.

`check_config` needs only the config: the command line runs it before an experiment
loads data, and the loop runs it again for callers that skip the command line. The
checks that need the data or the devices (batch vs. training set, batch vs. device
count, image size vs. the model's strides) run at the start of the loop. Each failure
is a `ConfigError` naming the field, the value and what is expected. Fields absent
from a config are not checked: experiments carry different subsets.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax.numpy as jnp

from errors import ConfigError
from train import optimizer

_MISSING = object()


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(v):
  return _is_int(v) and v > 0


def _non_negative_int(v):
  return _is_int(v) and v >= 0


def _positive_number(v):
  return _is_number(v) and v > 0


def _non_negative_number_or_none(v):
  return v is None or (_is_number(v) and v >= 0)


def _unit_interval(v):
  return _is_number(v) and 0 <= v <= 1


def _below_one(v):
  return _is_number(v) and 0 <= v < 1


def _per_channel(test):
  """`test` of one number, or of each of a non-empty tuple/list (one per channel)."""
  return lambda v: test(v) or (isinstance(v, (tuple, list)) and bool(v)
                               and all(test(x) for x in v))


# Dotted field -> (test, what is expected). One table, so a new numeric field is one line.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    'seed': (_is_int, 'an integer'),
    'batch_size': (_positive_int, 'a positive integer (the global batch)'),
    'eval_batch_size': (_positive_int, 'a positive integer'),
    'num_epochs': (_positive_int, 'a positive integer'),
    'log_every_steps': (_positive_int, 'a positive integer'),
    'eval_every_epochs': (_positive_int, 'a positive integer'),
    'shuffle_buffer': (lambda v: v is None or _positive_int(v), 'a positive integer or None'),
    'train_examples': (_non_negative_int, 'an integer >= 0 (0 = all)'),
    'train_repeats': (_positive_int, 'a positive integer'),
    'label_smoothing': (_below_one, 'a number in [0, 1)'),
    'num_shown': (_non_negative_int, 'an integer >= 0'),
    'num_overlays': (_non_negative_int, 'an integer >= 0'),
    'optimizer.learning_rate': (_positive_number, 'a positive number'),
    'optimizer.warmup_steps': (_non_negative_int, 'an integer >= 0'),
    'optimizer.weight_decay': (lambda v: _is_number(v) and v >= 0, 'a number >= 0'),
    'optimizer.grad_clip_norm': (_non_negative_number_or_none, 'a number >= 0 (0 = off)'),
    'optimizer.end_lr_fraction': (_unit_interval, 'a number in [0, 1]'),
    'optimizer.b1': (_below_one, 'a number in [0, 1)'),
    'optimizer.b2': (_below_one, 'a number in [0, 1)'),
    'optimizer.momentum': (_below_one, 'a number in [0, 1)'),
    'preprocess.mean': (_per_channel(_is_number), 'a number or one number per channel'),
    'preprocess.std': (_per_channel(_positive_number), 'a positive number or one per channel'),
}


def _get(config: Mapping[str, Any], dotted: str) -> Any:
  value = config
  for key in dotted.split('.'):
    if not isinstance(value, Mapping) and not hasattr(value, 'keys'):
      return _MISSING
    if key not in value:
      return _MISSING
    value = value[key]
  return value


def check_config(config: Mapping[str, Any]) -> None:
  """Every check that needs only the config; raises `ConfigError` on the first failure."""
  for field, (test, expected) in RULES.items():
    value = _get(config, field)
    if value is not _MISSING and not test(value):
      raise ConfigError(f'config.{field}={value!r}; expected {expected}.')
  name = _get(config, 'optimizer.name')
  if name is not _MISSING and name not in optimizer.OPTIMIZER_NAMES:
    raise ConfigError(f'config.optimizer.name={name!r}; expected one of '
                      f'{", ".join(optimizer.OPTIMIZER_NAMES)}.')
  dtype = _get(config, 'compute_dtype')
  if dtype not in (_MISSING, '', None):
    try:
      ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
      ok = False
    if not ok:
      raise ConfigError(f"config.compute_dtype={dtype!r}; expected '' (float32) or a float "
                        "dtype name such as 'bfloat16'.")
  _check_models(config)
  _check_data_source(config)
  _check_augment(config)
  _check_evals(config)


def _check_models(config: Mapping[str, Any]) -> None:
  from models.registry import MODELS  # pylint: disable=g-import-not-at-top
  models = {}
  if _get(config, 'model.name') is not _MISSING:
    models['model'] = config['model']
  named = _get(config, 'models')
  if named is not _MISSING:
    models.update({f'models.{k}': v for k, v in named.items()})
    names = _get(config, 'model_names')
    for name in () if names is _MISSING else names:
      if name not in named:
        raise ConfigError(f'config.model_names has {name!r}; expected names from '
                          f'config.models: {", ".join(named)}.')
  for field, model_config in models.items():
    if 'dtype' in model_config:
      raise ConfigError(f'config.{field}.dtype={model_config["dtype"]!r}: the compute dtype '
                        "has one field, config.compute_dtype (e.g. 'bfloat16'; parameters "
                        'stay float32); remove the model\'s dtype.')
    name = model_config['name']
    if name not in MODELS:
      raise ConfigError(f'config.{field}.name={name!r}; expected a registered model: '
                        f'{", ".join(MODELS.names())}.')
    cls = MODELS.get(name)
    if dataclasses.is_dataclass(cls):
      known = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
      unknown = sorted(set(model_config.keys()) - known - {'name'})
      if unknown:
        raise ConfigError(f'config.{field}.{unknown[0]}: model {name!r} ({cls.__name__}) has '
                          f'no such field; its fields: {", ".join(sorted(known))}.')


def _check_data_source(config: Mapping[str, Any]) -> None:
  name = _get(config, 'data.source')
  if name is _MISSING:
    return
  from data.sources import registered_sources  # pylint: disable=g-import-not-at-top
  sources = registered_sources()
  if name not in sources:
    raise ConfigError(f'config.data.source={name!r}; expected a registered data source: '
                      f'{", ".join(sources.names())}.')


def _check_augment(config: Mapping[str, Any]) -> None:
  path = _get(config, 'augment_on')
  if path not in (_MISSING, 'host', 'device'):
    raise ConfigError(f"config.augment_on={path!r}; expected 'host' (per example in "
                      "tf.data) or 'device' (batched JAX ops inside the jitted step).")
  path = 'host' if path is _MISSING else path
  policy = _get(config, 'augment')
  if policy in (_MISSING, '', None):
    return
  # pylint: disable=g-import-not-at-top
  if path == 'device':  # the device path's own op list (no hue, no noise)
    from data.augment_jax import build_device_policy as build
  else:
    from data.augment import build_policy as build
  try:
    build(policy)
  except ValueError as e:
    on = " (augment_on='device')" if path == 'device' else ''
    raise ConfigError(f'config.augment={policy!r}{on}: {e}') from e


def _check_evals(config: Mapping[str, Any]) -> None:
  evals = _get(config, 'evals')
  if evals in (_MISSING, None):
    return
  from train.evaluators import EVALUATORS  # pylint: disable=g-import-not-at-top
  for name, fields in evals.items():
    kind = fields.get('type') if hasattr(fields, 'get') else None
    if kind not in EVALUATORS:
      raise ConfigError(f'config.evals.{name}.type={kind!r}; expected a registered evaluator: '
                        f'{", ".join(EVALUATORS.names()) or "none registered"} (task '
                        'packages register them: import tasks.evaluators).')
    every_epochs = fields.get('every_epochs', 1)
    if not _is_int(every_epochs) or every_epochs < 0:
      raise ConfigError(f'config.evals.{name}.every_epochs={every_epochs!r}: expected an '
                        'integer >= 0 (0: only at the end of training).')
