"""Classification loss and exact evaluation sums over `{'image', 'label', 'valid'?}` batches."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax


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


def classification_task(label_smoothing: float = 0.0):
  """The Task (loss, exact eval sums) the one training loop needs for classifiers."""
  from train.loop import Task  # pylint: disable=g-import-not-at-top  (loop imports steps only)
  return Task(loss_fn=functools.partial(cross_entropy_loss, label_smoothing=label_smoothing),
              sums_fn=eval_sums)
