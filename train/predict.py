"""The model's inference outputs over a dataset or an array of images, host side.

One jitted function for the module (keyed by the task's `inputs_fn`): a new jit
wrapper per call would recompile on every call. Batches are padded to one shape, so
each `(batch_size, inputs_fn)` compiles once, and only the valid rows come back.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator, Mapping

import jax
import numpy as np
import tensorflow as tf

from data import pipeline
from train import steps
from train.state import TrainState


@functools.partial(jax.jit, static_argnames=('inputs_fn',))
def _predict(state: TrainState, batch: Mapping[str, Any], inputs_fn: steps.InputsFn) -> Any:
  return steps.predict_step(state, batch, inputs_fn=inputs_fn)


def predict_batches(state: TrainState, dataset: tf.data.Dataset, *, batch_size: int,
                    inputs_fn: steps.InputsFn = steps.image_inputs
                    ) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
  """(outputs, batch) per batch of `dataset`, in order, cut to the batch's valid rows."""
  for batch in pipeline.as_numpy(pipeline.eval_batches(dataset, batch_size=batch_size)):
    keep = np.asarray(batch['valid'])
    outputs = jax.device_get(_predict(state, batch, inputs_fn))
    yield (jax.tree_util.tree_map(lambda x: np.asarray(x)[keep], outputs),
           {k: np.asarray(v)[keep] for k, v in batch.items()})


def predict_arrays(state: TrainState, images: np.ndarray, *, batch_size: int,
                   inputs_fn: steps.InputsFn = steps.image_inputs) -> np.ndarray:
  """Outputs `[N, ...]` for `images` `[N, H, W, C]` (e.g. logits); the last batch is
  padded with zeros, then cut."""
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:],
                                              chunk.dtype)])
    outputs.append(np.asarray(_predict(state, {'image': chunk}, inputs_fn))[:n])
  return np.concatenate(outputs)
