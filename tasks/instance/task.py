"""The Mask R-CNN's multi-part loss, its inputs, and a cheap in-loop evaluation metric.

The model in training mode (models/mask_rcnn/model.py) returns each head's outputs
beside its sampled targets; the loss is the sum of five terms, each normalised as in
detectron2 so that their sizes stay comparable whatever the number of objects:
  rpn_objectness  sigmoid cross-entropy over the sampled anchors
  rpn_box         smooth L1 (beta 1/9) on the positive anchors' deltas, / sampled anchors
  roi_class       softmax cross-entropy over the sampled RoIs (K + 1 classes)
  roi_box         L1 on the foreground RoIs' class-specific deltas, / sampled RoIs
  mask            per-pixel sigmoid cross-entropy of the foreground RoIs' 28x28 masks
The COCO metrics need the whole evaluation set at once (tasks/instance/coco_eval.py); inside
the loop the evaluation reports `recall50`, the fraction of ground-truth objects found
by a same-class detection with score >= 0.5 at IoU >= 0.5, and `precision50`, which
are exact sums over the evaluation set.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import optax

from models.mask_rcnn import box_ops
from train import steps
from train.task import Task

LOSS_TERMS = ('rpn_objectness', 'rpn_box', 'roi_class', 'roi_box', 'mask')
TARGET_KEYS = ('boxes', 'classes', 'instance_masks', 'instance_valid', 'is_crowd')


def _smooth_l1(x: jnp.ndarray, beta: float) -> jnp.ndarray:
  absolute = jnp.abs(x)
  if beta == 0:
    return absolute
  return jnp.where(absolute < beta, 0.5 * x * x / beta, absolute - 0.5 * beta)


def _safe_mean(total: jnp.ndarray, count: jnp.ndarray) -> jnp.ndarray:
  return total / jnp.maximum(count, 1.0)


def loss_terms(outputs: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
  """The five scalar loss terms from the training outputs (see the module docstring)."""
  labels = outputs['anchor_labels']
  sampled = (labels >= 0).astype(jnp.float32)
  positive = (labels == 1).astype(jnp.float32)
  objectness = optax.sigmoid_binary_cross_entropy(outputs['rpn_logits'],
                                                  positive)
  num_sampled = jnp.sum(sampled)
  rpn_box = jnp.sum(_smooth_l1(outputs['rpn_deltas'] - outputs['anchor_deltas'], 1 / 9)
                    * positive[..., None])

  roi_valid = outputs['roi_valid'].astype(jnp.float32)
  roi_classes = outputs['roi_classes']
  roi_class = optax.softmax_cross_entropy_with_integer_labels(outputs['class_logits'],
                                                              roi_classes)
  foreground = roi_valid * (roi_classes > 0)
  roi_box = jnp.sum(_smooth_l1(outputs['roi_box_deltas'] - outputs['roi_delta_targets'], 0.0)
                    * foreground[..., None])
  num_rois = jnp.sum(roi_valid)

  mask_valid = outputs['mask_valid'].astype(jnp.float32)
  mask_bce = jnp.mean(optax.sigmoid_binary_cross_entropy(outputs['mask_logits'],
                                                         outputs['mask_targets']),
                      axis=(-2, -1))
  return {
      'rpn_objectness': _safe_mean(jnp.sum(objectness * sampled), num_sampled),
      'rpn_box': _safe_mean(rpn_box, num_sampled),
      'roi_class': _safe_mean(jnp.sum(roi_class * roi_valid), num_rois),
      'roi_box': _safe_mean(roi_box, num_rois),
      'mask': _safe_mean(jnp.sum(mask_bce * mask_valid), jnp.sum(mask_valid)),
  }


def instance_loss(outputs: Mapping[str, jnp.ndarray], batch: Mapping[str, jnp.ndarray],
                  weights: Mapping[str, float] | None = None
                  ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """`LossFn`: the weighted sum of the terms; metrics are every term and the total."""
  del batch  # the targets were consumed by the model's sampling
  terms = loss_terms(outputs)
  weights = weights or {}
  loss = sum(weights.get(name, 1.0) * terms[name] for name in LOSS_TERMS)
  foreground = jnp.sum((outputs['roi_classes'] > 0) & outputs['roi_valid'])
  return loss, {'loss': loss, **terms,
                'foreground_rois': foreground / outputs['roi_classes'].shape[0]}


def instance_inputs(mean: float | tuple = 0.0, std: float | tuple = 1.0) -> steps.InputsFn:
  """`InputsFn`: (normalised images, the ground-truth targets) for the model."""
  normalize = steps.normalized_image_inputs(mean, std)

  def inputs_fn(batch):
    targets = {k: batch[k] for k in TARGET_KEYS if k in batch}
    return normalize(batch) + (targets,)
  return inputs_fn


def detection_sums(outputs: Mapping[str, jnp.ndarray], batch: Mapping[str, jnp.ndarray],
                   score_threshold: float = 0.5, iou_threshold: float = 0.5
                   ) -> dict[str, jnp.ndarray]:
  """`SumsFn`: found ground-truth objects and correct detections over valid images."""
  image_valid = batch['valid']
  is_crowd = batch.get('is_crowd', jnp.zeros_like(batch['instance_valid']))
  gt_valid = batch['instance_valid'] & ~is_crowd & image_valid[:, None]
  detected = outputs['valid'] & (outputs['scores'] >= score_threshold) & image_valid[:, None]
  iou = box_ops.pairwise_iou(outputs['boxes_xyxy'], batch['boxes'].astype(jnp.float32))
  same_class = outputs['classes'][:, :, None] == batch['classes'][:, None, :]
  hit = (iou >= iou_threshold) & same_class & detected[:, :, None] & gt_valid[:, None, :]
  return {'found': jnp.sum(jnp.any(hit, axis=1)), 'objects': jnp.sum(gt_valid),
          'correct': jnp.sum(jnp.any(hit, axis=2)), 'detections': jnp.sum(detected),
          'count': jnp.sum(image_valid)}


def detection_means(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
  return {'recall50': float(sums['found'] / max(float(sums['objects']), 1.0)),
          'precision50': float(sums['correct'] / max(float(sums['detections']), 1.0)),
          'detections_per_image': float(sums['detections'] / max(float(sums['count']), 1.0)),
          'count': float(sums['count'])}


def instance_task(mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0,
                  loss_weights: Mapping[str, float] | None = None) -> Task:
  def loss_fn(outputs, batch):
    return instance_loss(outputs, batch, loss_weights)
  return Task(loss_fn=loss_fn, sums_fn=detection_sums, inputs_fn=instance_inputs(mean, std),
              means_fn=detection_means)
