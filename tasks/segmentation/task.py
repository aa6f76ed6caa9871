"""Segmentation losses and the Task for semantic and binary segmentation.

Batches are `{'image': [B, H, W, C], 'mask': int [B, H, W], 'valid'?: bool [B]}`.
Logits are `[B, H, W, K]`: K = C classes (softmax) or K = 1 (binary, sigmoid; mask
0/1). A pixel whose mask value is `ignore_id` (or any value outside the classes)
adds nothing to a loss or a metric.

Losses (each a mean over the counted pixels):
  cross-entropy  softmax CE; with `class_weights` w the weighted mean
                 sum_i w[y_i] ce_i / sum_i w[y_i] (PyTorch's CrossEntropyLoss(weight=,
                 ignore_index=) convention), so rare classes can count more.
  binary CE      sigmoid cross-entropy of the single logit.
  soft Dice      1 - (2 sum p y + eps) / (sum p + sum y + eps) over the whole batch, per
                 class, averaged over classes (binary: the foreground only).
The training loss is `ce_weight * CE + dice_weight * Dice`.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks.segmentation import confusion
from train import steps
from train.task import Task

DICE_EPS = 1.0


def counted_pixels(labels: jnp.ndarray, num_classes: int,
                   valid: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """bool [B, H, W]: label in [0, num_classes) and, if given, the example is `valid` [B]."""
  counted = (labels >= 0) & (labels < num_classes)
  if valid is not None:
    counted &= valid.astype(bool)[:, None, None]
  return counted


def one_hot(labels: jnp.ndarray, num_classes: int) -> jnp.ndarray:
  # A compare, not a gather: its gradient needs no scatter (slow on XLA:CPU).
  return (labels[..., None] == jnp.arange(num_classes)).astype(jnp.float32)


def softmax_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, counted: jnp.ndarray,
                          class_weights: Optional[Sequence[float]] = None) -> jnp.ndarray:
  """Weighted mean CE of logits [B, H, W, C] against labels [B, H, W] over `counted` pixels."""
  num_classes = logits.shape[-1]
  targets = one_hot(labels, num_classes)
  ce = -(targets * jax.nn.log_softmax(logits)).sum(-1)
  weight = counted.astype(jnp.float32)
  if class_weights is not None:
    weight *= (targets * jnp.asarray(class_weights, jnp.float32)).sum(-1)
  return (ce * weight).sum() / jnp.maximum(weight.sum(), 1e-8)


def binary_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, counted: jnp.ndarray
                         ) -> jnp.ndarray:
  """Mean sigmoid CE of logits [B, H, W, 1] against 0/1 labels [B, H, W] over `counted`."""
  x = logits[..., 0]
  y = (labels == 1).astype(jnp.float32)
  # max(x, 0) - x y + log(1 + exp(-|x|)): stable for large |x|.
  bce = jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
  weight = counted.astype(jnp.float32)
  return (bce * weight).sum() / jnp.maximum(weight.sum(), 1e-8)


def soft_dice_loss(probabilities: jnp.ndarray, targets: jnp.ndarray, counted: jnp.ndarray
                   ) -> jnp.ndarray:
  """1 - mean over channels of the soft Dice of probabilities vs. targets [B, H, W, K]."""
  weight = counted.astype(jnp.float32)[..., None]
  p, y = probabilities * weight, targets * weight
  axes = (0, 1, 2)
  dice = (2 * (p * y).sum(axes) + DICE_EPS) / (p.sum(axes) + y.sum(axes) + DICE_EPS)
  return 1.0 - dice.mean()


def probabilities_and_targets(logits: jnp.ndarray, labels: jnp.ndarray
                              ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-channel probabilities and targets [B, H, W, K] (binary: the foreground only)."""
  if logits.shape[-1] == 1:
    return jax.nn.sigmoid(logits), (labels == 1).astype(jnp.float32)[..., None]
  return jax.nn.softmax(logits), one_hot(labels, logits.shape[-1])


def predictions(logits: jnp.ndarray) -> jnp.ndarray:
  """int32 class ids [B, H, W]: argmax, or logit > 0 for a single binary logit."""
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(jnp.int32)
  return logits.argmax(-1).astype(jnp.int32)


def num_classes_of(logits: jnp.ndarray) -> int:
  return max(2, logits.shape[-1])


def segmentation_loss(logits: jnp.ndarray, batch: dict, *, ce_weight: float = 1.0,
                      dice_weight: float = 0.0,
                      class_weights: Optional[Sequence[float]] = None
                      ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Training loss and metrics (loss, ce, dice, pixel_accuracy) of one batch."""
  labels = batch['mask'].astype(jnp.int32)
  if labels.ndim == 4:
    labels = labels[..., 0]
  counted = counted_pixels(labels, num_classes_of(logits), batch.get('valid'))
  if logits.shape[-1] == 1:
    ce = binary_cross_entropy(logits, labels, counted)
  else:
    ce = softmax_cross_entropy(logits, labels, counted, class_weights)
  dice = soft_dice_loss(*probabilities_and_targets(logits, labels), counted)
  loss = ce_weight * ce + dice_weight * dice
  correct = (predictions(logits) == labels) & counted
  accuracy = correct.sum() / jnp.maximum(counted.sum(), 1)
  return loss, {'loss': loss, 'ce': ce, 'dice': dice, 'pixel_accuracy': accuracy}


def eval_sums(logits: jnp.ndarray, batch: dict) -> dict[str, jnp.ndarray]:
  """Sums over the counted pixels of valid examples: the confusion matrix [C, C], the
  (unweighted) cross-entropy sum and pixel count, and the example count."""
  labels = batch['mask'].astype(jnp.int32)
  if labels.ndim == 4:
    labels = labels[..., 0]
  num_classes = num_classes_of(logits)
  valid = batch.get('valid', jnp.ones(logits.shape[0], bool))
  counted = counted_pixels(labels, num_classes, valid)
  if logits.shape[-1] == 1:
    ce = binary_cross_entropy(logits, labels, counted)
  else:
    ce = softmax_cross_entropy(logits, labels, counted)
  pixels = counted.sum(dtype=jnp.int32)  # exact per batch; summed in int64 on the host
  return {'confusion': confusion.confusion_matrix(labels, predictions(logits), num_classes,
                                                  counted),
          'loss': ce * pixels, 'pixels': pixels,
          'count': valid.astype(jnp.float32).sum()}


def median_frequency_weights(masks: np.ndarray, num_classes: int) -> np.ndarray:
  """Class weights median(freq) / freq[c] from training masks (SegNet's balancing);
  ignore pixels are not counted, an absent class gets weight 0."""
  counts = np.bincount(masks[(masks >= 0) & (masks < num_classes)].ravel(),
                       minlength=num_classes).astype(np.float64)
  freq = counts / max(counts.sum(), 1)
  present = freq > 0
  weights = np.zeros(num_classes)
  weights[present] = np.median(freq[present]) / freq[present]
  return weights


def segmentation_task(class_names: Sequence[str], ce_weight: float = 1.0,
                      dice_weight: float = 0.0,
                      class_weights: Optional[Sequence[float]] = None,
                      mean: float | Sequence[float] | None = None,
                      std: float | Sequence[float] | None = None) -> Task:
  """The Task (loss, exact confusion-matrix metrics) the one training loop needs; with
  `mean` and `std` the step normalises the uint8 images (train/steps.py), else they go
  in as they are.

  Metrics after an evaluation: loss (mean pixel CE), miou, pixel_accuracy,
  iou/<class>, and for two classes dice, precision, recall (see tasks.segmentation.confusion).
  """
  weights = None if class_weights is None else tuple(float(w) for w in class_weights)
  inputs_fn = (steps.image_inputs if mean is None
               else steps.normalized_image_inputs(mean, 1.0 if std is None else std))
  return Task(loss_fn=functools.partial(segmentation_loss, ce_weight=ce_weight,
                                        dice_weight=dice_weight, class_weights=weights),
              sums_fn=eval_sums, inputs_fn=inputs_fn,
              means_fn=functools.partial(confusion.means_from_sums,
                                         class_names=tuple(class_names)))
