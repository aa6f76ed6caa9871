"""Inference post-processing for one image (callers `jax.vmap` over images).

`detect`: the box head's softmax scores and class-specific boxes of every RoI become
R x K candidates; those under `score_threshold` are dropped, per-class NMS runs on
the best `pre_nms_topk`, and the best `max_detections` are kept, padded with a
validity mask so that every image returns the same shapes.
`paste_masks`: each detection's 28 x 28 mask probabilities are resampled into its box
at the image resolution (bilinear, the mask's cells covering the box evenly, as in
detectron2's `paste_masks_in_image`); pixels outside the box are 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from models.mask_rcnn import box_ops
from models.mask_rcnn.nms import batched_nms
from models.mask_rcnn.targets import ROI_BOX_WEIGHTS


def detect(class_logits: jnp.ndarray, box_deltas: jnp.ndarray, rois_xyxy: jnp.ndarray,
           roi_valid: jnp.ndarray, image_size: tuple[int, int], *,
           score_threshold: float = 0.05, nms_threshold: float = 0.5,
           max_detections: int = 20, pre_nms_topk: int = 500) -> dict[str, jnp.ndarray]:
  """Detections of one image.

  Args:
    class_logits: [R, K + 1]; box_deltas: [R, K, 4]; rois_xyxy: [R, 4]; roi_valid: [R].
  Returns:
    boxes_xyxy [D, 4], scores [D], classes [D] (1..K), valid [D]; D = max_detections,
    best first.
  """
  num_rois, num_classes = box_deltas.shape[:2]
  scores = jax.nn.softmax(class_logits, axis=-1)[:, 1:]  # [R, K]
  boxes = box_ops.decode_boxes(box_deltas, rois_xyxy[:, None, :], weights=ROI_BOX_WEIGHTS)
  boxes = box_ops.clip_boxes(boxes, *image_size)
  classes = jnp.broadcast_to(jnp.arange(1, num_classes + 1), (num_rois, num_classes))
  sides = boxes[..., 2:] - boxes[..., :2]
  valid = (roi_valid[:, None] & (scores > score_threshold) & jnp.all(sides > 0, axis=-1))
  scores, boxes = scores.reshape(-1), boxes.reshape(-1, 4)
  classes, valid = classes.reshape(-1), valid.reshape(-1)
  # NMS is quadratic: run it on the best candidates only.
  _, top = jax.lax.top_k(jnp.where(valid, scores, -1.0), min(pre_nms_topk, scores.shape[0]))
  keep, keep_valid = batched_nms(boxes[top], scores[top], classes[top],
                                 iou_threshold=nms_threshold, max_outputs=max_detections,
                                 valid=valid[top])
  chosen = top[keep]
  return {'boxes_xyxy': jnp.where(keep_valid[:, None], boxes[chosen], 0.0),
          'scores': jnp.where(keep_valid, scores[chosen], 0.0),
          'classes': jnp.where(keep_valid, classes[chosen], 0),
          'valid': keep_valid}


def paste_masks(mask_probs: jnp.ndarray, boxes_xyxy: jnp.ndarray,
                image_size: tuple[int, int]) -> jnp.ndarray:
  """[D, m, m] probabilities in their boxes [D, 4] -> [D, H, W] at image resolution."""
  height, width = image_size
  size = mask_probs.shape[-1]
  centres_y = jnp.arange(height, dtype=jnp.float32) + 0.5
  centres_x = jnp.arange(width, dtype=jnp.float32) + 0.5

  def paste_one(probs, box):
    x0, y0, x1, y1 = box
    # Position of each pixel centre on the mask's cell grid (cell centres at i + 0.5).
    u = (centres_x - x0) / jnp.maximum(x1 - x0, 1e-6) * size - 0.5  # [W]
    v = (centres_y - y0) / jnp.maximum(y1 - y0, 1e-6) * size - 0.5  # [H]
    inside = (((centres_y >= y0) & (centres_y < y1))[:, None]
              & ((centres_x >= x0) & (centres_x < x1))[None, :])
    u = jnp.clip(u, 0.0, size - 1.0)
    v = jnp.clip(v, 0.0, size - 1.0)
    u0 = jnp.floor(u).astype(jnp.int32)
    v0 = jnp.floor(v).astype(jnp.int32)
    u1 = jnp.minimum(u0 + 1, size - 1)
    v1 = jnp.minimum(v0 + 1, size - 1)
    fu, fv = (u - u0)[None, :], (v - v0)[:, None]
    top = probs[v0][:, u0] * (1 - fu) + probs[v0][:, u1] * fu
    bottom = probs[v1][:, u0] * (1 - fu) + probs[v1][:, u1] * fu
    return jnp.where(inside, top * (1 - fv) + bottom * fv, 0.0)
  return jax.vmap(paste_one)(mask_probs, boxes_xyxy)
