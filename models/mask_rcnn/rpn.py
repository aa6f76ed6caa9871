"""Region proposal network: the head, and proposal generation under jit.

The head (Ren et al. 2015, shared across FPN levels as in Lin et al. 2017) is a 3x3
conv + ReLU, then a 1x1 conv to one objectness logit per anchor and a 1x1 conv to
four box deltas per anchor. Outputs of all levels are flattened in the anchor order
of models/mask_rcnn/anchors.py (level, y, x, ratio) and concatenated.

Proposals (one image): the `pre_nms_topk` highest-scoring anchors, their deltas
decoded and clipped to the image, boxes narrower or lower than `min_size` dropped,
NMS at `nms_threshold`, and the best `post_nms_topk` kept, padded with a validity
mask, so every image yields the same number whatever it contains.
The RPN's training targets (anchor labelling and sampling) live in
models/mask_rcnn/targets.py; its loss in tasks/instance/task.py.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.mask_rcnn import box_ops
from models.mask_rcnn.nms import nms


class RPNHead(nn.Module):
  """`features` list of [B, H_l, W_l, C] -> (logits [B, A], deltas [B, A, 4]).

  The convs compute in `dtype`; logits and deltas leave in float32 (top-k, NMS, box
  decoding and the loss use them).
  """
  anchors_per_location: int
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    small = nn.initializers.normal(0.01)
    conv = nn.Conv(self.width, (3, 3), padding='SAME', kernel_init=small, dtype=self.dtype,
                   name='conv')
    objectness = nn.Conv(self.anchors_per_location, (1, 1), kernel_init=small,
                         dtype=self.dtype, name='objectness')
    deltas = nn.Conv(4 * self.anchors_per_location, (1, 1), kernel_init=small,
                     dtype=self.dtype, name='deltas')
    all_logits, all_deltas = [], []
    for level in features:
      hidden = nn.relu(conv(level))
      batch = level.shape[0]
      all_logits.append(objectness(hidden).astype(jnp.float32).reshape(batch, -1))
      all_deltas.append(deltas(hidden).astype(jnp.float32).reshape(batch, -1, 4))
    return jnp.concatenate(all_logits, axis=1), jnp.concatenate(all_deltas, axis=1)


def generate_proposals(logits: jnp.ndarray, deltas: jnp.ndarray, anchors_xyxy: jnp.ndarray,
                       image_size: tuple[int, int], *, pre_nms_topk: int,
                       post_nms_topk: int, nms_threshold: float = 0.7,
                       min_size: float = 1.0
                       ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """One image's proposals.

  Args:
    logits: [A] objectness logits; deltas: [A, 4]; anchors_xyxy: [A, 4].
  Returns:
    boxes_xyxy [P, 4], objectness logits [P] and valid [P] bool, P = post_nms_topk,
    best first.
  """
  top_logits, top = jax.lax.top_k(logits, min(pre_nms_topk, logits.shape[0]))
  boxes = box_ops.decode_boxes(deltas[top], anchors_xyxy[top])
  boxes = box_ops.clip_boxes(boxes, *image_size)
  sides = boxes[:, 2:] - boxes[:, :2]
  big_enough = jnp.all(sides >= min_size, axis=-1)
  keep, valid = nms(boxes, top_logits, iou_threshold=nms_threshold,
                    max_outputs=post_nms_topk, valid=big_enough)
  return boxes[keep], top_logits[keep], valid


def batch_proposals(logits: jnp.ndarray, deltas: jnp.ndarray, anchors_xyxy: jnp.ndarray,
                    image_size: tuple[int, int], **kwargs
                    ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """`generate_proposals` over a batch ([B, A], [B, A, 4]); no gradient flows back.

  Proposals are treated as fixed inputs of the second stage (the approximate joint
  training of Ren et al.): the RPN learns from its own loss only.
  """
  logits, deltas = jax.lax.stop_gradient((logits, deltas))
  return jax.vmap(lambda lg, d: generate_proposals(lg, d, anchors_xyxy, image_size, **kwargs)
                  )(logits, deltas)
