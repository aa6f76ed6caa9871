"""Classification: loss, exact evaluation sums and label checks over
`{'image', 'label', 'valid'?}` batches, and the Task the loop trains with."""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train import steps
from train.task import Task


def cross_entropy_loss(logits: jnp.ndarray, batch: dict, label_smoothing: float = 0.0
                       ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Mean softmax cross-entropy of logits `[B, K]` against `batch['label']` `[B]`."""
  num_classes = logits.shape[-1]
  labels = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes), label_smoothing)
  loss = optax.softmax_cross_entropy(logits, labels).mean()
  accuracy = (logits.argmax(-1) == batch['label']).mean()
  return loss, {'loss': loss, 'accuracy': accuracy}


def eval_sums(logits: jnp.ndarray, batch: dict) -> dict[str, jnp.ndarray]:
  """Sums over the valid examples (`valid`), so batches add up to exact dataset means."""
  valid = batch.get('valid', jnp.ones(logits.shape[0], bool)).astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  correct = (logits.argmax(-1) == batch['label']).astype(jnp.float32)
  return {'loss': (losses * valid).sum(), 'accuracy': (correct * valid).sum(),
          'count': valid.sum()}


def check_labels(batch: Mapping[str, np.ndarray], num_classes: int, where: str) -> None:
  """Labels `[B]` must lie in [0, num_classes): else name the example (a `check_batch`)."""
  labels = batch['label']
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise ValueError(
        f"{where}: example {bad[0]} of this process's batch has label {labels[bad[0]]}, "
        f'outside [0, {num_classes - 1}] ({num_classes} class names in the training '
        f'Source); {bad.size} such example(s) in the batch. Fix the dataset or its class list.')


def classification_task(label_smoothing: float = 0.0,
                        mean: float | Sequence[float] | None = None,
                        std: float | Sequence[float] | None = None) -> Task:
  """The Task for classifiers: cross-entropy, exact eval sums, label checks; with `mean`
  and `std` the step normalises the uint8 images (train/steps.py), else they go in as
  they are."""
  inputs_fn = (steps.image_inputs if mean is None
               else steps.normalized_image_inputs(mean, 1.0 if std is None else std))
  return Task(loss_fn=functools.partial(cross_entropy_loss, label_smoothing=label_smoothing),
              sums_fn=eval_sums, inputs_fn=inputs_fn, check_batch=check_labels)
