"""Proposal generation of models/mask_rcnn/rpn.py: top-k, decode, clip, NMS, fixed count."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from models.mask_rcnn import rpn

ANCHORS = jnp.array([[0., 0., 10., 10.], [1., 0., 11., 10.], [30., 30., 40., 40.],
                     [50., 50., 70., 70.], [20., 0., 20.5, 0.5]])


def test_proposals_are_decoded_clipped_suppressed_and_padded():
  logits = jnp.array([3.0, 2.0, 1.0, 0.5, 4.0])
  deltas = jnp.zeros((5, 4)).at[2].set([0.5, 0.0, 0.0, 0.0])  # anchor 2 moves 5 px right
  boxes, scores, valid = rpn.generate_proposals(
      logits, deltas, ANCHORS, (64, 64), pre_nms_topk=5, post_nms_topk=6,
      nms_threshold=0.7, min_size=1.0)
  chex.assert_shape([boxes, scores, valid], [(6, 4), (6,), (6,)])
  # Anchor 4 is below min_size, anchor 1 overlaps anchor 0 (IoU 0.82): both dropped.
  np.testing.assert_array_equal(valid, [True, True, True, False, False, False])
  np.testing.assert_allclose(scores[:3], [3.0, 1.0, 0.5])
  np.testing.assert_allclose(boxes[:3], [[0, 0, 10, 10], [35, 30, 45, 40], [50, 50, 64, 64]])


def test_pre_nms_topk_limits_the_candidates():
  logits = jnp.array([3.0, 2.0, 1.0, 0.5, 4.0])
  _, scores, valid = rpn.generate_proposals(
      logits, jnp.zeros((5, 4)), ANCHORS, (64, 64), pre_nms_topk=2, post_nms_topk=4)
  # The two best are anchor 4 (too small) and anchor 0: one proposal survives.
  assert int(valid.sum()) == 1 and float(scores[0]) == 3.0


def test_batch_proposals_blocks_gradients_and_vmaps():
  logits = jnp.tile(jnp.array([[3.0, 2.0, 1.0, 0.5, 4.0]]), (2, 1))
  deltas = jnp.zeros((2, 5, 4))

  def total(lg):
    boxes, scores, _ = rpn.batch_proposals(lg, deltas, ANCHORS, (64, 64), pre_nms_topk=5,
                                           post_nms_topk=3)
    return jnp.sum(boxes) + jnp.sum(scores)
  np.testing.assert_array_equal(jax.grad(total)(logits), 0.0)
