"""The training state: a pytree passed in and out of pure step functions."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


InitFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class TrainState(train_state.TrainState):
  """`params`, optimizer state and step, plus what else a resumed run needs.

  model_state: non-trained collections, e.g. `{'batch_stats': ...}` for BatchNorm.
  rng: the run's base key (uint32 [2]); the step's dropout key is
    `fold_in(rng, step)`, so it is saved with the checkpoint and a resumed run draws
    the same dropout masks as an uninterrupted one.
  """
  model_state: flax.core.FrozenDict[str, Any] | dict[str, Any]
  rng: jax.Array


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       input_shape: tuple[int, ...], rng: jax.Array,
                       init_fn: Optional[InitFn] = None) -> TrainState:
  """Initialises `model` on zeros of `input_shape` ([B, H, W, C]) and wraps it.

  `init_fn` maps the initial variables ({collection: tree}) to the ones to start from,
  e.g. with pretrained weights put in (models/import_torchvision.py); the optimizer
  state is initialised on its result. It may run under `jax.jit`: arrays it reads from
  a file become constants of the compiled initialisation.
  """
  params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
  variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                         jnp.zeros(input_shape, jnp.float32), train=False)
  if init_fn is not None:
    variables = init_fn(variables)
  variables = dict(variables)
  params = variables.pop('params')
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           model_state=variables, rng=state_rng)


def count_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
