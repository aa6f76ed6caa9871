"""Box ops: delta coding round trip and hand values, IoU/IoA against a NumPy loop."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.mask_rcnn.box_ops import (
  box_area,
  clip_boxes,
  decode_boxes,
  encode_boxes,
  pairwise_ioa,
  pairwise_iou,
)


def _random_boxes(rng, shape, low=0.0, high=100.0, min_size=1.0, max_size=50.0):
  x0 = rng.uniform(low, high, shape)
  y0 = rng.uniform(low, high, shape)
  w = rng.uniform(min_size, max_size, shape)
  h = rng.uniform(min_size, max_size, shape)
  return np.stack([x0, y0, x0 + w, y0 + h], axis=-1).astype(np.float32)


def _reference_overlaps(boxes_a, boxes_b):
  """(IoU, IoA) `[N, M]` with plain loops; 0 where the denominator is 0."""
  iou = np.zeros((len(boxes_a), len(boxes_b)))
  ioa = np.zeros_like(iou)
  for i, (ax0, ay0, ax1, ay1) in enumerate(boxes_a.astype(np.float64)):
    for j, (bx0, by0, bx1, by1) in enumerate(boxes_b.astype(np.float64)):
      inter = max(min(ax1, bx1) - max(ax0, bx0), 0) * max(min(ay1, by1) - max(ay0, by0), 0)
      area_a = max(ax1 - ax0, 0) * max(ay1 - ay0, 0)
      area_b = max(bx1 - bx0, 0) * max(by1 - by0, 0)
      union = area_a + area_b - inter
      iou[i, j] = inter / union if union > 0 else 0.0
      ioa[i, j] = inter / area_a if area_a > 0 else 0.0
  return iou, ioa


# Disjoint, identical, contained, touching, zero-area and inverted boxes.
_SPECIAL_A = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [2, 2, 4, 4], [5, 5, 5, 5],
                       [10, 0, 20, 10], [3, 3, 1, 1]], np.float32)
_SPECIAL_B = np.array([[20, 20, 30, 30], [0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5],
                       [0, 0, 10, 10]], np.float32)


def test_iou_and_ioa_match_a_numpy_loop_on_special_and_random_boxes():
  rng = np.random.default_rng(0)
  boxes_a = np.concatenate([_SPECIAL_A, _random_boxes(rng, (20,))])
  boxes_b = np.concatenate([_SPECIAL_B, _random_boxes(rng, (15,))])
  iou, ioa = _reference_overlaps(boxes_a, boxes_b)
  chex.assert_trees_all_close(pairwise_iou(boxes_a, boxes_b), iou, atol=1e-6)
  chex.assert_trees_all_close(pairwise_ioa(boxes_a, boxes_b), ioa, atol=1e-6)
  # Spot checks of the special cases, by hand.
  got = np.asarray(pairwise_iou(_SPECIAL_A, _SPECIAL_B))
  assert got[0, 0] == 0.0 and got[1, 1] == 1.0 and got[2, 2] == pytest.approx(0.04)
  assert got[3, 3] == 0.0 and got[4, 4] == 0.0 and got[5, 4] == 0.0
  assert np.asarray(pairwise_ioa(_SPECIAL_A, _SPECIAL_B))[2, 2] == 1.0


def test_iou_has_no_nan_values_or_gradients_for_zero_area_boxes():
  zeros = jnp.zeros((3, 4))
  assert not np.any(np.isnan(pairwise_iou(zeros, zeros)))
  grad = jax.grad(lambda b: pairwise_iou(b, b).sum() + pairwise_ioa(b, b).sum())(zeros)
  assert np.all(np.isfinite(grad))


def test_pairwise_ops_broadcast_leading_batch_dimensions():
  rng = np.random.default_rng(1)
  boxes_a, boxes_b = _random_boxes(rng, (2, 5)), _random_boxes(rng, (2, 3))
  iou = pairwise_iou(boxes_a, boxes_b)
  chex.assert_shape(iou, (2, 5, 3))
  for b in range(2):
    chex.assert_trees_all_close(iou[b], _reference_overlaps(boxes_a[b], boxes_b[b])[0],
                                atol=1e-6)


def test_box_area_clamps_inverted_boxes_at_zero():
  boxes = jnp.array([[0, 0, 4, 5], [4, 0, 0, 5], [0, 0, 3, -1]], jnp.float32)
  chex.assert_trees_all_close(box_area(boxes), jnp.array([20.0, 0.0, 0.0]))


def test_encode_gives_hand_computed_deltas():
  anchors = jnp.array([[0, 0, 10, 10]], jnp.float32)
  boxes = jnp.array([[5, 5, 15, 25]], jnp.float32)  # centre (10, 15), size 10 x 20
  chex.assert_trees_all_close(encode_boxes(boxes, anchors),
                              jnp.array([[0.5, 1.0, 0.0, math.log(2.0)]]), atol=1e-6)
  chex.assert_trees_all_close(encode_boxes(boxes, anchors, weights=(10, 10, 5, 5)),
                              jnp.array([[5.0, 10.0, 0.0, 5 * math.log(2.0)]]), atol=1e-5)


@pytest.mark.parametrize('weights', [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_inverts_encode(weights):
  rng = np.random.default_rng(2)
  boxes = _random_boxes(rng, (4, 50))
  anchors = _random_boxes(rng, (4, 50), min_size=4.0)
  deltas = encode_boxes(boxes, anchors, weights)
  chex.assert_shape(deltas, (4, 50, 4))
  chex.assert_trees_all_close(decode_boxes(deltas, anchors, weights), boxes, atol=1e-3)
  # And the other way round: encode(decode(d)) == d for in-range deltas.
  deltas = jnp.asarray(rng.uniform(-1, 1, (4, 50, 4)), jnp.float32)
  chex.assert_trees_all_close(encode_boxes(decode_boxes(deltas, anchors, weights), anchors,
                                           weights), deltas, atol=1e-4)


def test_decode_clamps_the_size_change():
  anchors = jnp.array([[0, 0, 16, 16]], jnp.float32)
  boxes = decode_boxes(jnp.array([[0.0, 0.0, 50.0, -1.0]]), anchors, scale_clamp=math.log(4.0))
  width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
  assert width == pytest.approx(64.0) and height == pytest.approx(16 * math.exp(-1.0))
  default = decode_boxes(jnp.array([[0.0, 0.0, 1e3, 0.0]]), anchors)
  assert default[0, 2] - default[0, 0] == pytest.approx(1000.0, rel=1e-5)


def test_encode_is_finite_for_degenerate_boxes():
  deltas = encode_boxes(jnp.zeros((2, 4)), jnp.array([[0, 0, 10, 10], [0, 0, 0, 0]], jnp.float32))
  assert np.all(np.isfinite(deltas))


def test_clip_boxes_to_the_frame_with_scalar_and_per_image_sizes():
  boxes = jnp.array([[-5, -2, 30, 12], [3, 4, 5, 6]], jnp.float32)
  chex.assert_trees_all_close(clip_boxes(boxes, 10, 20),
                              jnp.array([[0, 0, 20, 10], [3, 4, 5, 6]], jnp.float32))
  batched = clip_boxes(jnp.stack([boxes, boxes]), jnp.array([[10.0], [5.0]]),
                       jnp.array([[20.0], [4.0]]))
  chex.assert_trees_all_close(batched[1], jnp.array([[0, 0, 4, 5], [3, 4, 4, 5]], jnp.float32))
