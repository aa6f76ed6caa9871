"""NMS: against a plain NumPy greedy reference, validity, output padding, jit and vmap."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.mask_rcnn.nms import batched_nms, nms


def _iou(a, b):
  inter = (max(min(a[2], b[2]) - max(a[0], b[0]), 0)
           * max(min(a[3], b[3]) - max(a[1], b[1]), 0))
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _reference_nms(boxes, scores, threshold, valid=None, groups=None):
  """Kept input indices in descending score order (scores are distinct)."""
  valid = np.ones(len(scores), bool) if valid is None else valid
  groups = np.zeros(len(scores), int) if groups is None else groups
  remaining = [i for i in np.argsort(-scores) if valid[i]]
  keep = []
  while remaining:
    best = remaining.pop(0)
    keep.append(best)
    remaining = [j for j in remaining
                 if groups[j] != groups[best] or _iou(boxes[best], boxes[j]) <= threshold]
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


def test_bad_shapes_name_the_field():
  with pytest.raises(ValueError, match='scores'):
    nms(jnp.zeros((4, 4)), jnp.zeros((3,)), iou_threshold=0.5, max_outputs=2)
  with pytest.raises(ValueError, match='groups'):
    batched_nms(jnp.zeros((4, 4)), jnp.zeros((4,)), jnp.zeros((3,), jnp.int32),
                iou_threshold=0.5, max_outputs=2)
