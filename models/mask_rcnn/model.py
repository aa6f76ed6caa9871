"""Mask R-CNN (He et al. 2017) assembled from its stages, with static shapes throughout.

    images [B, H, W, 3]
      -> ResNetFPN | ResNet50FPN (backbone.py)  pyramid of [B, H/s, W/s, C], s in `strides`
      -> RPNHead (rpn.py) + anchors.py       objectness and deltas per anchor
      -> generate_proposals (rpn.py)         P proposals per image (top-k, decode, NMS)
      -> multilevel RoIAlign (roi_align.py)  7x7 (box) / 14x14 (mask) features per region
      -> BoxHead, MaskHead (heads.py)        classes, class-specific boxes, 28x28 masks
      -> detect, paste_masks (postprocess.py) at inference

`model.apply(variables, images, targets=None, train=False)`:
- `train=False` returns detections: `boxes_xyxy [B, D, 4]`, `scores [B, D]`, `classes
  [B, D]` (1..K), `valid [B, D]` and `masks [B, D, H, W]` (probabilities pasted at the
  input resolution).
- `train=True` needs `targets` (`boxes` [B, N, 4] boxes_xyxy, `classes` [B, N],
  `instance_masks` [B, N, H, W], `instance_valid` [B, N], optional `is_crowd` [B, N])
  and the 'dropout' rng (it drives the anchor and RoI sampling); it returns what
  tasks/instance/task.py needs: each head's outputs beside its targets (targets.py).

Precision: with `dtype=bfloat16` the backbone, FPN, RPN head convs, the RoIAlign
features and the box and mask heads compute in bfloat16 (parameters stay float32).
Kept in float32 on purpose, where rounding would move boxes or decisions: the heads'
outputs (RPN objectness and deltas, class logits, box deltas, mask logits are cast
to float32 as they leave each head), so the top-k of proposals and NMS scores, box
decoding and encoding (box_ops.py), anchor and RoI matching (IoUs on float32 boxes),
softmax / sigmoid scores and every loss; RoIAlign's bilinear weights and its average
(float32 accumulation, rounded once to bfloat16 for the heads); anchors and targets.
RoIAlign gathers bfloat16 feature values (half the bytes of its largest tensor), so
the backward scatter-add of its gradient into the pyramid accumulates in bfloat16.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.mask_rcnn import targets as targets_lib
from models.mask_rcnn.anchors import generate_anchors
from models.mask_rcnn.backbone import (RESNET50_FPN_STRIDES, ResNet50FPN, ResNetFPN,
                                       pyramid_strides)
from models.mask_rcnn.heads import BoxHead, MaskHead, class_box_deltas, class_mask_logits
from models.mask_rcnn.postprocess import detect, paste_masks
from models.mask_rcnn.roi_align import multilevel_roi_align
from models.mask_rcnn.rpn import RPNHead, batch_proposals
from models.registry import MODELS


@MODELS.register('mask_rcnn')
class MaskRCNN(nn.Module):
  """Mask R-CNN with a ResNet-FPN; `num_classes` = K object classes (no background)."""
  num_classes: int
  # Backbone (backbone.py): 'resnet_fpn' (small, from scratch; the fields up to
  # fpn_width, its strides follow from stem_stride and the stages) or 'resnet50_fpn'
  # (detectron2's R50-FPN: strides 4..64, RoIs pooled from P2-P5; fpn_width, freeze_at
  # and backbone_norm, see models/resnet50.py).
  backbone: str = 'resnet_fpn'
  stem_width: int = 32
  stage_widths: Sequence[int] = (32, 64, 128)
  blocks_per_stage: int = 1
  stem_stride: int = 1
  fpn_width: int = 64
  freeze_at: int = 2
  backbone_norm: str = 'frozen'
  # Anchors: one size per pyramid level, each at every aspect ratio (height / width).
  anchor_sizes: Sequence[float] = (12.0, 24.0, 48.0)
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  # RPN.
  rpn_batch_size: int = 256
  rpn_pre_nms_topk_train: int = 600
  rpn_post_nms_topk_train: int = 128
  rpn_pre_nms_topk_test: int = 300
  rpn_post_nms_topk_test: int = 64
  rpn_nms_threshold: float = 0.7
  # Second stage.
  num_rois: int = 64
  roi_positive_fraction: float = 0.25
  num_mask_rois: int = 16
  box_pool_size: int = 7
  mask_pool_size: int = 14
  sampling_ratio: int = 2
  # FPN level of a region: canonical_level + log2(sqrt(area) / canonical_box_size).
  canonical_box_size: float = 32.0
  canonical_level: int = 2
  fc_width: int = 256
  mask_head_width: int = 64
  mask_head_convs: int = 4
  # Inference.
  score_threshold: float = 0.05
  detection_nms_threshold: float = 0.5
  max_detections: int = 20
  dtype: Any = jnp.float32

  def _strides(self) -> tuple[tuple[int, ...], int]:
    """(the strides of the pyramid levels (the RPN's), how many the RoI heads pool from)."""
    if self.backbone == 'resnet_fpn':
      strides = pyramid_strides(self.stem_stride, len(self.stage_widths))
      return strides, len(strides)
    if self.backbone == 'resnet50_fpn':
      return RESNET50_FPN_STRIDES, len(RESNET50_FPN_STRIDES) - 1
    raise ValueError(f"models/mask_rcnn/model.py: backbone={self.backbone!r}; expected "
                     "'resnet_fpn' or 'resnet50_fpn'.")

  def _backbone(self) -> nn.Module:
    if self.backbone == 'resnet50_fpn':
      return ResNet50FPN(self.fpn_width, self.freeze_at, self.backbone_norm, self.dtype,
                         name='backbone')
    return ResNetFPN(self.stem_width, self.stage_widths, self.blocks_per_stage,
                     self.stem_stride, self.fpn_width, self.dtype, name='backbone')

  def _pool(self, features: list[jnp.ndarray], rois_xyxy: jnp.ndarray,
            size: int) -> jnp.ndarray:
    """RoIAlign of [B, R, 4] regions on their pyramid levels -> [B, R, size, size, C]."""
    strides, num_levels = self._strides()
    features, strides = features[:num_levels], strides[:num_levels]

    def one_image(image_features, rois):
      return multilevel_roi_align(
          image_features, strides, rois, output_size=(size, size),
          sampling_ratio=self.sampling_ratio, canonical_box_size=self.canonical_box_size,
          canonical_level=self.canonical_level, first_level=int(math.log2(strides[0])))
    return jax.vmap(one_image)(features, rois_xyxy)

  @nn.compact
  def __call__(self, images: jnp.ndarray, targets: Optional[dict[str, jnp.ndarray]] = None,
               train: bool = False) -> dict[str, jnp.ndarray]:
    strides, _ = self._strides()
    if len(self.anchor_sizes) != len(strides):
      raise ValueError(f'models/mask_rcnn/model.py: anchor_sizes={tuple(self.anchor_sizes)} '
                       f'needs one size per pyramid level (strides {strides}).')
    batch, height, width = images.shape[:3]
    image_size = (height, width)
    features = self._backbone()(images, train)
    anchors = jnp.asarray(generate_anchors(image_size, strides, self.anchor_sizes,
                                           self.aspect_ratios))
    rpn_logits, rpn_deltas = RPNHead(len(self.aspect_ratios), self.fpn_width, self.dtype,
                                     name='rpn')(features)
    box_head = BoxHead(self.num_classes, self.fc_width, self.dtype, name='box_head')
    mask_head = MaskHead(self.num_classes, self.mask_head_width, self.mask_head_convs,
                         self.dtype, name='mask_head')
    if not train:
      return self._infer(features, anchors, rpn_logits, rpn_deltas, image_size, box_head,
                         mask_head)
    if targets is None:
      raise ValueError('models/mask_rcnn/model.py: train=True needs `targets` (boxes, '
                       'classes, instance_masks, instance_valid).')
    gt_boxes = targets['boxes'].astype(jnp.float32)
    is_crowd = targets.get('is_crowd')
    if is_crowd is None:
      is_crowd = jnp.zeros(gt_boxes.shape[:2], bool)
    gt_valid = targets['instance_valid'] & ~is_crowd
    crowd_valid = targets['instance_valid'] & is_crowd
    rpn_key, roi_key = jax.random.split(self.make_rng('dropout'))
    # Crowd regions are rows of the same boxes array, selected by crowd_valid.
    rpn_targets = jax.vmap(lambda b, v, c, k: targets_lib.rpn_targets(
        anchors, b, v, b, c, k, num_samples=self.rpn_batch_size))(
            gt_boxes, gt_valid, crowd_valid, jax.random.split(rpn_key, batch))
    proposals, _, proposal_valid = batch_proposals(
        rpn_logits, rpn_deltas, anchors, image_size,
        pre_nms_topk=self.rpn_pre_nms_topk_train, post_nms_topk=self.rpn_post_nms_topk_train,
        nms_threshold=self.rpn_nms_threshold)
    rois = jax.vmap(lambda p, pv, b, c, v, k: targets_lib.sample_rois(
        p, pv, b, c, v, k, num_rois=self.num_rois,
        positive_fraction=self.roi_positive_fraction))(
            proposals, proposal_valid, gt_boxes, targets['classes'], gt_valid,
            jax.random.split(roi_key, batch))
    class_logits, box_deltas = jax.vmap(box_head)(
        self._pool(features, rois['rois_xyxy'], self.box_pool_size))
    # Foreground RoIs come first, so the mask head sees them all (up to num_mask_rois).
    mask_rois = rois['rois_xyxy'][:, :self.num_mask_rois]
    mask_classes = rois['roi_classes'][:, :self.num_mask_rois]
    mask_logits = jax.vmap(mask_head)(self._pool(features, mask_rois, self.mask_pool_size))
    mask_size = mask_logits.shape[2]
    mask_targets = jax.vmap(lambda m, i, r: targets_lib.mask_targets(m, i, r, mask_size))(
        targets['instance_masks'], rois['roi_matched'][:, :self.num_mask_rois], mask_rois)
    return {
        'rpn_logits': rpn_logits, 'rpn_deltas': rpn_deltas, **rpn_targets,
        'class_logits': class_logits,
        'roi_box_deltas': jax.vmap(class_box_deltas)(box_deltas, rois['roi_classes']),
        'roi_classes': rois['roi_classes'], 'roi_valid': rois['roi_valid'],
        'roi_delta_targets': rois['roi_deltas'],
        'mask_logits': jax.vmap(class_mask_logits)(mask_logits, mask_classes),
        'mask_targets': mask_targets,
        'mask_valid': (mask_classes > 0) & rois['roi_valid'][:, :self.num_mask_rois],
    }

  def _infer(self, features, anchors, rpn_logits, rpn_deltas, image_size, box_head,
             mask_head) -> dict[str, jnp.ndarray]:
    proposals, _, proposal_valid = batch_proposals(
        rpn_logits, rpn_deltas, anchors, image_size,
        pre_nms_topk=self.rpn_pre_nms_topk_test, post_nms_topk=self.rpn_post_nms_topk_test,
        nms_threshold=self.rpn_nms_threshold)
    class_logits, box_deltas = jax.vmap(box_head)(
        self._pool(features, proposals, self.box_pool_size))
    detections = jax.vmap(lambda c, d, r, v: detect(
        c, d, r, v, image_size, score_threshold=self.score_threshold,
        nms_threshold=self.detection_nms_threshold, max_detections=self.max_detections))(
            class_logits, box_deltas, proposals, proposal_valid)
    mask_logits = jax.vmap(mask_head)(
        self._pool(features, detections['boxes_xyxy'], self.mask_pool_size))
    mask_probs = jax.nn.sigmoid(jax.vmap(class_mask_logits)(mask_logits,
                                                            detections['classes']))
    masks = jax.vmap(lambda p, b: paste_masks(p, b, image_size))(
        mask_probs, detections['boxes_xyxy'])
    return {**detections, 'masks': masks * detections['valid'][:, :, None, None]}
