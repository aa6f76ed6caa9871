"""Training targets of the three heads, for one image (callers `jax.vmap` over images).

- RPN: anchors labelled by IoU with the ground truth (models/mask_rcnn/anchors.py:
  positive >= 0.7, negative < 0.3, each box's best anchors positive, crowd regions
  ignored), a fixed-size random sample of them, and box deltas of the positives.
- Box head: proposals plus the ground-truth boxes themselves (so that early in
  training, when proposals are poor, the head still sees positives), labelled
  foreground at IoU >= `fg_iou` with a ground-truth box, else background; a fixed
  number `num_rois` sampled, foreground first, at most `positive_fraction` of them.
- Mask head: the first `num_mask_rois` sampled RoIs (the foreground ones come first);
  the target is the matched instance mask cut out by RoIAlign at the RoI, 28 x 28,
  thresholded at 0.5 (He et al. 2017).
Ground truth: `boxes_xyxy [N, 4]`, `classes [N]` (1..K), `instance_masks [N, H, W]`,
`gt_valid [N]` (valid and not crowd), and crowd boxes as ignore regions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from models.mask_rcnn import box_ops
from models.mask_rcnn.anchors import label_anchors, sample_labels
from models.mask_rcnn.roi_align import roi_align

# Box head deltas are scaled up (detectron2's default) so that their loss is of the
# same order as the classification loss.
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def rpn_targets(anchors_xyxy: jnp.ndarray, gt_boxes_xyxy: jnp.ndarray, gt_valid: jnp.ndarray,
                crowd_boxes_xyxy: jnp.ndarray, crowd_valid: jnp.ndarray, key: jax.Array, *,
                num_samples: int = 256, positive_fraction: float = 0.5,
                positive_iou: float = 0.7, negative_iou: float = 0.3
                ) -> dict[str, jnp.ndarray]:
  """Anchor labels [A] (1 / 0 / -1 not sampled) and box delta targets [A, 4]."""
  labels, matched = label_anchors(
      anchors_xyxy, gt_boxes_xyxy, gt_valid, positive_iou=positive_iou,
      negative_iou=negative_iou, ignore_boxes_xyxy=crowd_boxes_xyxy,
      ignore_valid=crowd_valid)
  labels = sample_labels(labels, key, num_samples=num_samples,
                         positive_fraction=positive_fraction)
  deltas = box_ops.encode_boxes(gt_boxes_xyxy[matched], anchors_xyxy)
  return {'anchor_labels': labels, 'anchor_deltas': deltas}


def sample_rois(proposals_xyxy: jnp.ndarray, proposal_valid: jnp.ndarray,
                gt_boxes_xyxy: jnp.ndarray, gt_classes: jnp.ndarray, gt_valid: jnp.ndarray,
                key: jax.Array, *, num_rois: int, positive_fraction: float = 0.25,
                fg_iou: float = 0.5) -> dict[str, jnp.ndarray]:
  """`num_rois` RoIs for the box head, foreground first.

  Returns rois_xyxy [S, 4], roi_classes [S] (0 = background), roi_valid [S] (False
  for padding when fewer candidates than S exist), roi_matched [S] (the index of the
  matched ground-truth box) and roi_deltas [S, 4] (targets, meaningful for foreground).
  """
  boxes = jnp.concatenate([proposals_xyxy, gt_boxes_xyxy], axis=0)
  valid = jnp.concatenate([proposal_valid, gt_valid], axis=0)
  iou = box_ops.pairwise_iou(boxes, gt_boxes_xyxy)
  iou = jnp.where(gt_valid[None, :], iou, -1.0)
  matched = jnp.argmax(iou, axis=1)
  best_iou = jnp.max(iou, axis=1)
  labels = jnp.where(best_iou >= fg_iou, 1, 0)
  labels = jnp.where(valid, labels, -1)
  labels = sample_labels(labels, key, num_samples=num_rois,
                         positive_fraction=positive_fraction)
  # Sampled foreground first, then sampled background, then the rest; stable by index.
  rank = jnp.where(labels == 1, 2, jnp.where(labels == 0, 1, 0))
  order = jnp.argsort(-rank, stable=True)[:num_rois]
  chosen_labels = labels[order]
  chosen_matched = matched[order]
  rois = boxes[order]
  foreground = chosen_labels == 1
  return {
      'rois_xyxy': rois,
      'roi_classes': jnp.where(foreground, gt_classes[chosen_matched], 0),
      'roi_valid': chosen_labels >= 0,
      'roi_matched': chosen_matched,
      'roi_deltas': box_ops.encode_boxes(gt_boxes_xyxy[chosen_matched], rois,
                                         weights=ROI_BOX_WEIGHTS),
  }


def mask_targets(instance_masks: jnp.ndarray, matched: jnp.ndarray, rois_xyxy: jnp.ndarray,
                 mask_size: int = 28) -> jnp.ndarray:
  """The matched instance masks [N, H, W] cut at `rois_xyxy` [M, 4] -> [M, m, m] {0, 1}."""
  masks = instance_masks[matched].astype(jnp.float32)[..., None]  # [M, H, W, 1]

  def cut(mask, box):
    return roi_align(mask, box[None], output_size=(mask_size, mask_size), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)[0, :, :, 0]
  return (jax.vmap(cut)(masks, rois_xyxy) >= 0.5).astype(jnp.float32)
