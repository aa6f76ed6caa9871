"""Pure step functions: `train_step(state, batch) -> (state, metrics)`, `eval_step`.

Nothing here is jitted: the caller applies `jax.jit` (with `donate_argnums=(0,)`),
`jax.pmap(..., axis_name='batch')` or jit over a mesh, binding the keyword arguments
with `functools.partial`. Under pmap, pass the same `axis_name` so gradients, metrics
and BatchNorm statistics are averaged across devices.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from train.state import TrainState

Batch = dict[str, jnp.ndarray]
# (model outputs, batch) -> (scalar loss, metrics dict of scalars)
LossFn = Callable[[Any, Batch], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]
# (model outputs, batch) -> dict of sums over the batch's valid examples (with 'count')
SumsFn = Callable[[Any, Batch], dict[str, jnp.ndarray]]
InputsFn = Callable[[Batch], tuple]
# (uint8 batch, key) -> augmented batch: augmentation inside the step (data/augment_jax.py)
DeviceAugmentFn = Callable[[Batch, jax.Array], Batch]
# fold_in data of the augmentation stream: no step count reaches it, so the augmentation
# keys never coincide with the dropout keys fold_in(rng, step).
AUGMENT_STREAM = 2**31 - 1


def image_inputs(batch: Batch) -> tuple:
  return (batch['image'],)


def normalization_table(mean: float | Sequence[float] = 0.0,
                        std: float | Sequence[float] = 1.0) -> np.ndarray:
  """float32 [C, 256]: `(v / 255 - mean[c]) / std[c]` for every uint8 value v, computed
  once on the host in float32 with IEEE division (C = 1 for scalar mean and std)."""
  mean = np.asarray(mean, np.float32).reshape(-1, 1)
  std = np.asarray(std, np.float32).reshape(-1, 1)
  values = np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)
  return ((values - mean) / std).astype(np.float32)


def normalized_image_inputs(mean: float | Sequence[float] = 0.0,
                            std: float | Sequence[float] = 1.0) -> InputsFn:
  """An `inputs_fn` taking uint8 `batch['image']` [B, H, W, C] to `(image / 255 - mean) / std`.

  The project's one normalisation, done inside the jitted step on the whole batch: a
  per-example tf.data map costs tens of microseconds per image on a CPU (it made the
  input pipeline the bottleneck of the MLP), and uint8 batches are 4x smaller to move.
  Each value is looked up in `normalization_table` rather than computed: XLA rewrites
  the division into a multiplication by the reciprocal, which differs from NumPy's and
  TensorFlow's result by up to 3.6e-7, and a lookup keeps every earlier seeded result
  (normalised in tf.data before) bit for bit. Images of another dtype are an error.
  """
  table = normalization_table(mean, std)

  def inputs_fn(batch: Batch) -> tuple:
    image = batch['image']
    if image.dtype != jnp.uint8:
      raise TypeError(f"normalized_image_inputs: batch['image'] is {image.dtype} "
                      f'{list(image.shape)}; expected uint8 [B, H, W, C] (normalisation '
                      'happens once, here in the step).')
    channels = image.shape[-1]
    if table.shape[0] not in (1, channels):
      raise ValueError(f'normalized_image_inputs: {table.shape[0]} means/stds for images '
                       f'with {channels} channels {list(image.shape)}.')
    lookup = jnp.asarray(np.broadcast_to(table, (channels, 256)))
    return (lookup[jnp.arange(channels), image.astype(jnp.int32)],)
  return inputs_fn


def train_step(state: TrainState, batch: Batch, *, loss_fn: LossFn,
               inputs_fn: InputsFn = image_inputs, axis_name: Optional[str] = None,
               augment_fn: Optional[DeviceAugmentFn] = None
               ) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """One optimizer update on `batch`; returns the new state and the batch's metrics.

  `augment_fn(batch, key)`, if given, augments the (uint8) batch first, before
  `inputs_fn` normalises it and before `loss_fn` reads its targets.
  """
  # The dropout key depends on the step only, so a resumed run repeats it exactly.
  rng = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
  if augment_fn is not None:
    batch = augment_fn(batch, augment_key(state, axis_name))
  mutable = list(state.model_state.keys())

  def compute_loss(params):
    outputs, new_model_state = state.apply_fn(
        {'params': params, **state.model_state}, *inputs_fn(batch), train=True,
        rngs={'dropout': rng}, mutable=mutable)
    loss, metrics = loss_fn(outputs, batch)
    return loss, (metrics, new_model_state)

  grads, (metrics, new_model_state) = jax.grad(compute_loss, has_aux=True)(state.params)
  if axis_name is not None:
    grads = lax.pmean(grads, axis_name)
    metrics = lax.pmean(metrics, axis_name)
    new_model_state = lax.pmean(new_model_state, axis_name)
  state = state.apply_gradients(grads=grads, model_state=dict(new_model_state))
  return state, metrics


def augment_key(state: TrainState, axis_name: Optional[str] = None) -> jax.Array:
  """The step's augmentation key: a stream of its own, from (state.rng, step) alone, so a
  resumed run augments exactly as the uninterrupted one; per device under pmap."""
  key = jax.random.fold_in(jax.random.fold_in(state.rng, AUGMENT_STREAM), state.step)
  if axis_name is not None:
    key = jax.random.fold_in(key, lax.axis_index(axis_name))
  return key


def eval_step(state: TrainState, batch: Batch, *, sums_fn: SumsFn,
              inputs_fn: InputsFn = image_inputs, axis_name: Optional[str] = None
              ) -> dict[str, jnp.ndarray]:
  """Sums of the evaluation metrics over the valid examples of `batch`."""
  outputs = state.apply_fn({'params': state.params, **state.model_state},
                           *inputs_fn(batch), train=False)
  sums = sums_fn(outputs, batch)
  if axis_name is not None:
    sums = lax.psum(sums, axis_name)
  return sums


def predict_step(state: TrainState, batch: Batch, *,
                 inputs_fn: InputsFn = image_inputs) -> Any:
  """The model's inference outputs (logits) on `batch`."""
  return state.apply_fn({'params': state.params, **state.model_state},
                        *inputs_fn(batch), train=False)
