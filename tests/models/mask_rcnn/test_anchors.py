"""Anchors: layout and sizes, Matcher labels on hand-made cases, fixed-size sampling."""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.mask_rcnn.anchors import (
  generate_anchors,
  label_anchors,
  num_anchors_per_level,
  sample_labels,
)


def test_anchor_counts_follow_ceil_of_the_feature_map_size():
  anchors = generate_anchors((10, 17), strides=(4, 8), sizes=(8.0, 16.0),
                             aspect_ratios=(0.5, 1.0, 2.0))
  assert num_anchors_per_level((10, 17), (4, 8), 3) == [3 * 5 * 3, 2 * 3 * 3]
  assert anchors.shape == (45 + 18, 4) and anchors.dtype == np.float32


def test_anchors_are_ordered_y_x_ratio_with_centres_and_shapes():
  ratios = (0.5, 1.0, 2.0)
  anchors = generate_anchors((10, 17), strides=(4, 8), sizes=(8.0, 16.0), aspect_ratios=ratios)
  level0 = anchors[:45].reshape(3, 5, 3, 4)   # [H_l, W_l, ratio, 4]
  level1 = anchors[45:].reshape(2, 3, 3, 4)
  for level, stride, size in ((level0, 4, 8.0), (level1, 8, 16.0)):
    centre_x = (level[..., 0] + level[..., 2]) / 2
    centre_y = (level[..., 1] + level[..., 3]) / 2
    width, height = level[..., 2] - level[..., 0], level[..., 3] - level[..., 1]
    xs = (np.arange(level.shape[1]) + 0.5) * stride
    ys = (np.arange(level.shape[0]) + 0.5) * stride
    np.testing.assert_allclose(centre_x, np.broadcast_to(xs[None, :, None], centre_x.shape),
                               atol=1e-5)
    np.testing.assert_allclose(centre_y, np.broadcast_to(ys[:, None, None], centre_y.shape),
                               atol=1e-5)
    np.testing.assert_allclose(width * height, size * size, rtol=1e-5)
    np.testing.assert_allclose(height / width, np.broadcast_to(ratios, width.shape), rtol=1e-5)
  # Anchor (level 0, y=1, x=2, ratio 2.0) by hand: centre (10, 6), w = sqrt(32), h = 2w.
  half_w = math.sqrt(32.0) / 2
  np.testing.assert_allclose(anchors[(1 * 5 + 2) * 3 + 2],
                             [10 - half_w, 6 - 2 * half_w, 10 + half_w, 6 + 2 * half_w], atol=1e-5)


def test_sizes_need_one_entry_per_level():
  with pytest.raises(ValueError, match='sizes'):
    generate_anchors((8, 8), strides=(4, 8), sizes=(8.0,), aspect_ratios=(1.0,))


_GT = jnp.array([[0, 0, 10, 10],        # gt 0: anchor 0 matches it exactly
                 [50, 50, 60, 60],      # gt 1: only a poor match exists (anchor 3)
                 [20, 0, 30, 10]],      # gt 2: invalid padding, equal to anchor 2
                jnp.float32)
_GT_VALID = jnp.array([True, True, False])
_ANCHORS = jnp.array([[0, 0, 10, 10],        # IoU 1 with gt 0          -> 1
                      [0, 0, 10, 20],        # IoU 0.5 with gt 0        -> -1
                      [20, 0, 30, 10],       # only the invalid gt      -> 0
                      [55, 55, 70, 70],      # IoU 25/300 with gt 1, its best -> 1 (low quality)
                      [56, 56, 70, 70],      # IoU 16/280 with gt 1     -> 0
                      [100, 100, 110, 110]],  # nothing; inside a crowd -> -1 when given
                     jnp.float32)
_CROWD = jnp.array([[95, 95, 120, 120], [18, 0, 26, 10], [0, 0, 10, 10]], jnp.float32)


def test_label_anchors_hand_made_case():
  labels, matched = label_anchors(_ANCHORS, _GT, _GT_VALID)
  assert labels.dtype == jnp.int32 and matched.dtype == jnp.int32
  np.testing.assert_array_equal(labels, [1, -1, 0, 1, 0, 0])
  np.testing.assert_array_equal(np.asarray(matched)[[0, 1, 3, 4]], [0, 0, 1, 1])


def test_without_low_quality_matches_the_poor_match_is_negative():
  labels, _ = label_anchors(_ANCHORS, _GT, _GT_VALID, allow_low_quality_matches=False)
  np.testing.assert_array_equal(labels, [1, -1, 0, 0, 0, 0])


def test_crowd_boxes_ignore_non_positive_anchors_they_cover():
  # IoA: anchor 5 in crowd 0 is 1; anchor 2 in crowd 1 is 60/100; anchor 0 (positive) in
  # crowd 2 is 1 and stays positive.
  labels, _ = label_anchors(_ANCHORS, _GT, _GT_VALID, ignore_boxes_xyxy=_CROWD,
                            ignore_valid=jnp.array([True, True, True]), ignore_ioa=0.5)
  np.testing.assert_array_equal(labels, [1, -1, -1, 1, 0, -1])
  only_valid = functools.partial(label_anchors, _ANCHORS, _GT, _GT_VALID,
                                 ignore_boxes_xyxy=_CROWD,
                                 ignore_valid=jnp.array([False, True, True]))
  np.testing.assert_array_equal(only_valid(ignore_ioa=0.55)[0], [1, -1, -1, 1, 0, 0])
  np.testing.assert_array_equal(only_valid(ignore_ioa=0.7)[0], [1, -1, 0, 1, 0, 0])


def test_low_quality_matches_include_ties_but_not_zero_iou():
  gt = jnp.array([[0, 0, 10, 10], [200, 200, 210, 210]], jnp.float32)  # gt 1 overlaps nothing
  anchors = jnp.array([[5, 0, 15, 10], [-5, 0, 5, 10], [0, 5, 10, 25], [300, 0, 310, 10]],
                      jnp.float32)  # IoU with gt 0: 1/3, 1/3, 50/250, 0
  labels, matched = label_anchors(anchors, gt, jnp.array([True, True]))
  np.testing.assert_array_equal(labels, [1, 1, 0, 0])
  np.testing.assert_array_equal(matched[:2], [0, 0])


def test_no_valid_gt_makes_every_anchor_negative():
  labels, _ = label_anchors(_ANCHORS, _GT, jnp.zeros((3,), bool))
  np.testing.assert_array_equal(labels, np.zeros(6))
  labels, _ = label_anchors(_ANCHORS, jnp.zeros((0, 4)), jnp.zeros((0,), bool))
  np.testing.assert_array_equal(labels, np.zeros(6))


def test_label_anchors_under_jit_and_vmap():
  run = jax.jit(jax.vmap(functools.partial(label_anchors, _ANCHORS)))
  labels, _ = run(jnp.stack([_GT, _GT]), jnp.stack([_GT_VALID, jnp.zeros((3,), bool)]))
  np.testing.assert_array_equal(labels, [[1, -1, 0, 1, 0, 0], [0] * 6])


def _random_labels(seed, num_positive, num_negative, num_ignored):
  labels = np.array([1] * num_positive + [0] * num_negative + [-1] * num_ignored, np.int32)
  return jnp.asarray(np.random.default_rng(seed).permutation(labels))


@pytest.mark.parametrize('counts,expected', [((40, 300, 60), (16, 48)),   # enough of both
                                             ((5, 300, 60), (5, 59)),     # few positives
                                             ((40, 10, 60), (16, 10))])   # few negatives
def test_sample_labels_counts_and_subset(counts, expected):
  labels = _random_labels(0, *counts)
  sampled = sample_labels(labels, jax.random.PRNGKey(0), num_samples=64, positive_fraction=0.25)
  chex.assert_shape(sampled, labels.shape)
  assert sampled.dtype == jnp.int32
  assert (int(jnp.sum(sampled == 1)), int(jnp.sum(sampled == 0))) == expected
  kept = np.asarray(sampled) != -1
  np.testing.assert_array_equal(np.asarray(sampled)[kept], np.asarray(labels)[kept])


def test_sample_labels_draws_differ_by_key_and_are_roughly_uniform():
  labels = _random_labels(1, 40, 300, 60)
  keys = jax.random.split(jax.random.PRNGKey(1), 400)
  draw = jax.jit(jax.vmap(functools.partial(sample_labels, labels, num_samples=64,
                                            positive_fraction=0.25)))
  sampled = np.asarray(draw(keys))
  assert not np.array_equal(sampled[0], sampled[1])
  # Each positive is chosen with probability 16/40, each negative with 48/300.
  rate = (sampled == 1).mean(axis=0)[np.asarray(labels) == 1]
  np.testing.assert_allclose(rate, 16 / 40, atol=0.1)
  rate = (sampled == 0).mean(axis=0)[np.asarray(labels) == 0]
  np.testing.assert_allclose(rate, 48 / 300, atol=0.07)
