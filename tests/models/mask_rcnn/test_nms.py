"""NMS: against a plain NumPy greedy reference, validity, output padding, jit and vmap.

The randomised cases put boxes on a quarter-pixel grid with sides below 128 px, so every
area, union and intersection is exact in float32 and the IoU ratios sit far from the threshold or
exactly on it: the float64 reference and the float32 model then make the same call on
every pair, and any difference in the kept list is an error of the parallel pass.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.mask_rcnn.nms import batched_nms, nms


def _iou(box, boxes):
  """IoU of one `[4]` box with each of `boxes [N, 4]`, in float64."""
  box, boxes = np.asarray(box, np.float64), np.asarray(boxes, np.float64)
  inter = (np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
           * np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0))
  union = (box[2] - box[0]) * (box[3] - box[1]) + (
      (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _reference_nms(boxes, scores, threshold, valid=None, groups=None):
  """Kept input indices in descending score order, equal scores in input order."""
  valid = np.ones(len(scores), bool) if valid is None else np.asarray(valid)
  groups = np.zeros(len(scores), int) if groups is None else np.asarray(groups)
  remaining = [i for i in np.argsort(-np.asarray(scores), kind='stable') if valid[i]]
  remaining = np.asarray(remaining, int)
  keep = []
  while remaining.size:
    best, remaining = remaining[0], remaining[1:]
    keep.append(int(best))
    survives = (groups[remaining] != groups[best]) | (
        _iou(boxes[best], boxes[remaining]) <= threshold)
    remaining = remaining[survives]
  return keep


def _random_case(seed, num_boxes=40):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, 30, (num_boxes, 2))
  size = rng.uniform(10, 30, (num_boxes, 2))
  boxes = np.concatenate([xy, xy + size], axis=1).astype(np.float32)
  scores = (rng.permutation(num_boxes) / num_boxes).astype(np.float32)  # no ties
  return boxes, scores


def _kept(indices, keep_valid):
  indices, keep_valid = np.asarray(indices), np.asarray(keep_valid)
  assert np.all(indices[~keep_valid] == 0), 'unused slots hold index 0'
  assert np.all(np.diff(keep_valid.astype(int)) <= 0), 'kept slots come first'
  return indices[keep_valid].tolist()


@pytest.mark.parametrize('threshold', [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize('seed', [0, 1])
def test_matches_the_numpy_greedy_reference(threshold, seed):
  boxes, scores = _random_case(seed)
  indices, keep_valid = nms(boxes, scores, iou_threshold=threshold, max_outputs=40)
  assert indices.shape == (40,) and indices.dtype == jnp.int32 and keep_valid.dtype == bool
  expected = _reference_nms(boxes, scores, threshold)
  assert 1 < len(expected) < 40  # the case exercises suppression
  assert _kept(indices, keep_valid) == expected


def test_invalid_boxes_are_never_kept_and_suppress_nothing():
  boxes, scores = _random_case(2)
  valid = np.random.default_rng(3).uniform(size=len(scores)) < 0.6
  valid[np.argmax(scores)] = False  # the best box is padding: it must not suppress
  indices, keep_valid = nms(boxes, scores, iou_threshold=0.5, max_outputs=40,
                            valid=jnp.asarray(valid))
  kept = _kept(indices, keep_valid)
  assert kept == _reference_nms(boxes, scores, 0.5, valid=valid)
  assert all(valid[i] for i in kept)


@pytest.mark.parametrize('max_outputs', [3, 100])
def test_max_outputs_truncates_or_pads(max_outputs):
  boxes, scores = _random_case(4)
  expected = _reference_nms(boxes, scores, 0.5)
  assert 3 < len(expected) < 40
  indices, keep_valid = nms(boxes, scores, iou_threshold=0.5, max_outputs=max_outputs)
  assert indices.shape == (max_outputs,)
  assert _kept(indices, keep_valid) == expected[:max_outputs]


def test_identical_boxes_keep_the_higher_score_only():
  boxes = jnp.array([[0, 0, 10, 10]] * 3 + [[50, 50, 60, 60]], jnp.float32)
  scores = jnp.array([0.2, 0.9, 0.5, 0.1])
  indices, keep_valid = nms(boxes, scores, iou_threshold=0.5, max_outputs=4)
  assert _kept(indices, keep_valid) == [1, 3]


def test_batched_nms_only_suppresses_within_a_group():
  boxes, scores = _random_case(5)
  groups = np.random.default_rng(6).integers(0, 3, len(scores)).astype(np.int32)
  valid = np.ones(len(scores), bool)
  valid[::7] = False
  boxes[::7] = 1e4  # padding with garbage coordinates must not matter
  indices, keep_valid = batched_nms(boxes, scores, jnp.asarray(groups), iou_threshold=0.3,
                                    max_outputs=40, valid=jnp.asarray(valid))
  kept = _kept(indices, keep_valid)
  expected = _reference_nms(boxes, scores, 0.3, valid=valid, groups=groups)
  assert kept == expected
  # Per-class NMS keeps more than class-agnostic NMS would on these overlapping boxes.
  assert len(expected) > len(_reference_nms(boxes, scores, 0.3, valid=valid))


def test_identical_boxes_of_different_groups_are_all_kept():
  boxes = jnp.array([[0, 0, 10, 10]] * 3, jnp.float32)
  indices, keep_valid = batched_nms(boxes, jnp.array([0.9, 0.8, 0.7]), jnp.array([0, 1, 0]),
                                    iou_threshold=0.5, max_outputs=3)
  assert _kept(indices, keep_valid) == [0, 1]


def test_works_under_jit_and_vmap_over_images():
  cases = [_random_case(seed) for seed in (7, 8, 9)]
  boxes = jnp.stack([c[0] for c in cases])
  scores = jnp.stack([c[1] for c in cases])
  valid = jnp.asarray(np.random.default_rng(10).uniform(size=scores.shape) < 0.8)
  run = jax.jit(jax.vmap(functools.partial(nms, iou_threshold=0.4, max_outputs=25)))
  indices, keep_valid = run(boxes, scores, valid=valid)
  assert indices.shape == (3, 25)
  for b, (case_boxes, case_scores) in enumerate(cases):
    expected = _reference_nms(case_boxes, case_scores, 0.4, valid=np.asarray(valid[b]))
    assert _kept(indices[b], keep_valid[b]) == expected[:25]


def _hard_case(seed, num_boxes, ties):
  """Boxes `[K, 4]`, scores `[K]` and valid `[K]` that make greedy NMS work hard.

  Half the boxes crowd around 8 objects (heavy overlaps); half form 6 chains of boxes
  sliding by a fraction of their size with falling scores, so a box is suppressed by
  the one before and that one by the one before it (deep dependencies across tiles).
  With `ties` the scores take 6 values only. About 15% are invalid padding, among them
  the 5 best-scoring boxes (padding must suppress nothing). Input order is shuffled.
  """
  rng = np.random.default_rng(seed)
  num_crowded = num_boxes // 2
  centres = rng.uniform(100, 900, (8, 2))[rng.integers(0, 8, num_crowded)]
  half = rng.uniform(4, 40, (8, 2))[rng.integers(0, 8, num_crowded)]
  centres = centres + rng.normal(0, 2, centres.shape)
  half = half * rng.uniform(0.85, 1.15, half.shape)
  parts = [np.concatenate([centres - half, centres + half], 1)]
  scores = [rng.uniform(size=num_crowded)]
  for chain in np.array_split(np.arange(num_boxes - num_crowded), 6):
    size = rng.uniform(8, 40, 2)
    angle = rng.uniform(0, 2 * np.pi)
    step = size * rng.uniform(0.05, 0.4) * np.array([np.cos(angle), np.sin(angle)])
    corner = rng.uniform(100, 900, 2) + np.arange(len(chain))[:, None] * step
    parts.append(np.concatenate([corner, corner + size], 1))
    scores.append(np.linspace(rng.uniform(0.5, 1), rng.uniform(0, 0.5), len(chain)))
  boxes = np.round(np.concatenate(parts) * 4) / 4
  scores = np.concatenate(scores)
  if ties:
    scores = np.ceil(scores * 6) / 6
  valid = rng.uniform(size=num_boxes) > 0.15
  valid[np.argsort(-scores)[:5]] = False
  order = rng.permutation(num_boxes)
  return boxes[order].astype(np.float32), scores[order].astype(np.float32), valid[order]


@functools.lru_cache(maxsize=None)
def _jitted(fn, iou_threshold, max_outputs):
  return jax.jit(functools.partial(fn, iou_threshold=iou_threshold, max_outputs=max_outputs))


def _one_pass(boxes, scores, threshold, valid):
  """What a one-pass NMS keeps: boxes that no better valid box overlaps (it forgets that
  a suppressor may itself be suppressed, which greedy NMS does not)."""
  order = np.argsort(-scores, kind='stable')
  rank = np.empty(len(order), int)
  rank[order] = np.arange(len(order))
  return [i for i in order if valid[i] and not any(
      valid[j] and rank[j] < rank[i] for j in np.flatnonzero(_iou(boxes[i], boxes) > threshold))]


@pytest.mark.parametrize('num_boxes,threshold', [(300, 0.7), (777, 0.3), (1000, 0.5)])
def test_hard_random_cases_match_the_greedy_reference(num_boxes, threshold):
  run = _jitted(nms, threshold, num_boxes)
  for seed in range(6):
    for ties in (False, True):
      boxes, scores, valid = _hard_case(seed, num_boxes, ties)
      kept = _kept(*run(boxes, scores, valid=valid))
      expected = _reference_nms(boxes, scores, threshold, valid=valid)
      assert kept == expected, (seed, ties)
      # Chains make greedy keep boxes whose suppressor was itself suppressed.
      assert len(expected) > len(_one_pass(boxes, scores, threshold, valid))
      if ties:
        assert len(np.unique(scores)) <= 6


def test_hard_random_groups_match_the_greedy_reference():
  run = _jitted(batched_nms, 0.5, 1000)
  for seed in range(6):
    boxes, scores, valid = _hard_case(seed + 100, 1000, ties=seed % 2 == 1)
    groups = np.random.default_rng(seed).integers(0, 4, 1000).astype(np.int32)
    kept = _kept(*run(boxes, scores, groups, valid=valid))
    assert kept == _reference_nms(boxes, scores, 0.5, valid=valid, groups=groups), seed


def test_a_long_chain_keeps_every_other_box_in_any_input_order():
  # Boxes 12 px wide sliding by 3 px: IoU 0.6 with the next box, 0.33 with the one
  # after, so each kept box removes only the next and the chain crosses every tile.
  num_boxes = 999
  left = 3.0 * np.arange(num_boxes)
  chain = np.stack([left, np.zeros(num_boxes), left + 12, np.full(num_boxes, 12.0)], 1)
  order = np.random.default_rng(0).permutation(num_boxes)  # input i is chain box order[i]
  boxes = chain[order].astype(np.float32)
  run = _jitted(nms, 0.5, num_boxes)
  falling = _kept(*run(boxes, -order.astype(np.float32)))
  assert falling == np.argsort(order)[::2].tolist()  # input positions of boxes 0, 2, ...
  tied = _kept(*run(boxes, np.full(num_boxes, 0.5, np.float32)))  # input order decides
  assert tied == _reference_nms(boxes, np.full(num_boxes, 0.5), 0.5)
  assert 0 < len(tied) < num_boxes // 2


def test_hard_cases_under_jit_and_vmap():
  boxes, scores, valid = map(np.stack, zip(*[_hard_case(seed, 1000, ties=seed == 201)
                                               for seed in (200, 201, 202)]))
  groups = np.random.default_rng(7).integers(0, 3, scores.shape).astype(np.int32)
  run = jax.jit(jax.vmap(functools.partial(batched_nms, iou_threshold=0.5, max_outputs=300)))
  indices, keep_valid = run(boxes, scores, groups, valid=valid)
  assert indices.shape == (3, 300)
  for b in range(3):
    expected = _reference_nms(boxes[b], scores[b], 0.5, valid=valid[b], groups=groups[b])
    assert _kept(indices[b], keep_valid[b]) == expected[:300]


def test_bad_shapes_name_the_field():
  with pytest.raises(ValueError, match='scores'):
    nms(jnp.zeros((4, 4)), jnp.zeros((3,)), iou_threshold=0.5, max_outputs=2)
  with pytest.raises(ValueError, match='groups'):
    batched_nms(jnp.zeros((4, 4)), jnp.zeros((4,)), jnp.zeros((3,), jnp.int32),
                iou_threshold=0.5, max_outputs=2)
