"""RoIAlign: against a loop transliteration of torchvision's CPU kernel; FPN levels; grads."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.mask_rcnn.roi_align import (
  assign_boxes_to_levels,
  multilevel_roi_align,
  roi_align,
)


def _bilinear(features, y, x):
  """torchvision's `bilinear_interpolate` (roi_align_kernel.cpp), one point, `[C]`."""
  height, width = features.shape[:2]
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return np.zeros(features.shape[2])
  y, x = max(y, 0.0), max(x, 0.0)
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_high = y_low = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_high = x_low = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  hy, hx = 1.0 - ly, 1.0 - lx
  return (hy * hx * features[y_low, x_low] + hy * lx * features[y_low, x_high]
          + ly * hx * features[y_high, x_low] + ly * lx * features[y_high, x_high])


def _reference_roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned):
  """torchvision's `roi_align_forward` with plain loops, float64, `[R, h, w, C]`."""
  features = np.asarray(features, np.float64)
  pooled_h, pooled_w = output_size
  out = np.zeros((len(boxes), pooled_h, pooled_w, features.shape[2]))
  offset = 0.5 if aligned else 0.0
  for r, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64)):
    start_w, start_h = x0 * spatial_scale - offset, y0 * spatial_scale - offset
    roi_w = x1 * spatial_scale - offset - start_w
    roi_h = y1 * spatial_scale - offset - start_h
    if not aligned:
      roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    for ph in range(pooled_h):
      for pw in range(pooled_w):
        total = np.zeros(features.shape[2])
        for iy in range(sampling_ratio):
          y = start_h + ph * bin_h + (iy + 0.5) * bin_h / sampling_ratio
          for ix in range(sampling_ratio):
            x = start_w + pw * bin_w + (ix + 0.5) * bin_w / sampling_ratio
            total += _bilinear(features, y, x)
        out[r, ph, pw] = total / (sampling_ratio * sampling_ratio)
  return out


# Image 48 x 40 at stride 4 -> features 12 x 10.
_BOXES = np.array([
    [3.0, 5.0, 30.0, 21.0],       # inside
    [-10.0, -6.0, 12.0, 9.0],     # over the top-left border
    [30.0, 35.0, 55.0, 60.0],     # over the bottom-right border
    [-30.0, -30.0, -8.0, -6.0],   # entirely outside: samples beyond -1 are 0
    [17.3, 9.6, 18.1, 10.2],      # smaller than one feature cell
    [0.0, 0.0, 40.0, 48.0],       # the whole image
    [39.0, 47.0, 40.0, 48.0],     # the last pixel
    [12.0, 12.0, 12.0, 12.0],     # zero size
], np.float32)


def _features(shape=(12, 10, 3), seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [1, 2])
@pytest.mark.parametrize('output_size', [(2, 3), (7, 7)])
def test_matches_the_torchvision_loop_reference(aligned, sampling_ratio, output_size):
  features = _features()
  rng = np.random.default_rng(sampling_ratio)
  random_boxes = rng.uniform(-8, 50, (6, 2))
  random_boxes = np.concatenate([random_boxes, random_boxes + rng.uniform(0, 30, (6, 2))], 1)
  boxes = np.concatenate([_BOXES, random_boxes.astype(np.float32)])
  got = roi_align(features, jnp.asarray(boxes), output_size=output_size, spatial_scale=0.25,
                  sampling_ratio=sampling_ratio, aligned=aligned)
  chex.assert_shape(got, (len(boxes),) + output_size + (3,))
  expected = _reference_roi_align(features, boxes, output_size, 0.25, sampling_ratio, aligned)
  chex.assert_trees_all_close(got, expected, atol=1e-5)
  assert np.all(np.asarray(got)[3] == 0.0)  # the box entirely outside


def test_is_jittable_and_keeps_the_feature_dtype():
  features = _features().astype(jnp.bfloat16)
  run = jax.jit(functools.partial(roi_align, output_size=(3, 3), spatial_scale=0.25))
  got = run(features, jnp.asarray(_BOXES))
  assert got.dtype == jnp.bfloat16
  expected = _reference_roi_align(features.astype(jnp.float32), _BOXES, (3, 3), 0.25, 2, True)
  chex.assert_trees_all_close(got.astype(jnp.float32), expected, atol=2e-2)


def test_gradient_is_the_adjoint_of_the_linear_map():
  # roi_align is linear in the features, so <grad of <cot, f(x)>, v> == <cot, f(v)>.
  features, other = _features(seed=1), _features(seed=2)
  align = functools.partial(roi_align, boxes_xyxy=jnp.asarray(_BOXES), output_size=(4, 4),
                            spatial_scale=0.25)
  cotangent = jax.random.normal(jax.random.PRNGKey(3), (len(_BOXES), 4, 4, 3))
  grad = jax.grad(lambda f: jnp.sum(cotangent * align(f)))(features)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0
  chex.assert_trees_all_close(jnp.sum(grad * other), jnp.sum(cotangent * align(other)),
                              rtol=1e-4)


def test_bad_sampling_ratio_names_the_field():
  with pytest.raises(ValueError, match='sampling_ratio'):
    roi_align(_features(), jnp.asarray(_BOXES), output_size=(2, 2), spatial_scale=0.25,
              sampling_ratio=0)


def _square(centre, side):
  return [centre - side / 2, centre - side / 2, centre + side / 2, centre + side / 2]


# Sides and their levels with canonical size 224 at level 4, levels 2..5 -> index 0..3.
_SIDES_AND_LEVELS = [(20.0, 0), (111.0, 0), (112.0, 1), (200.0, 1), (224.0, 2),
                     (447.0, 2), (448.0, 3), (2000.0, 3), (0.0, 0)]


def test_assign_boxes_to_levels_follows_the_fpn_formula():
  boxes = jnp.array([_square(250.0, side) for side, _ in _SIDES_AND_LEVELS], jnp.float32)
  levels = assign_boxes_to_levels(boxes, num_levels=4)
  assert levels.dtype == jnp.int32
  np.testing.assert_array_equal(levels, [level for _, level in _SIDES_AND_LEVELS])


def test_multilevel_equals_roi_align_on_the_chosen_level():
  strides = (4, 8, 16, 32)
  image_size = (500, 460)
  features = [_features((-(-image_size[0] // s), -(-image_size[1] // s), 3), seed=i)
              for i, s in enumerate(strides)]
  boxes = jnp.array([_square(230.0 + 7 * i, side) for i, (side, _) in
                     enumerate(_SIDES_AND_LEVELS)] + [[400.0, 10.0, 470.0, 40.0]], jnp.float32)
  run = jax.jit(functools.partial(multilevel_roi_align, strides=strides, output_size=(5, 4)))
  got = run(features, boxes_xyxy=boxes)
  chex.assert_shape(got, (len(boxes), 5, 4, 3))
  levels = np.asarray(assign_boxes_to_levels(boxes, num_levels=4))
  assert set(levels.tolist()) == {0, 1, 2, 3}
  per_level = np.stack([roi_align(f, boxes, output_size=(5, 4), spatial_scale=1.0 / s)
                        for f, s in zip(features, strides)])   # [L, R, 5, 4, 3]
  chex.assert_trees_all_close(got, per_level[levels, np.arange(len(boxes))], atol=1e-5)


def test_multilevel_gradient_reaches_every_used_level():
  strides = (4, 8)
  features = [_features((16, 16, 2), seed=0), _features((8, 8, 2), seed=1)]
  boxes = jnp.array([[4.0, 4.0, 20.0, 20.0], [0.0, 0.0, 60.0, 60.0]], jnp.float32)
  grads = jax.grad(lambda fs: multilevel_roi_align(
      fs, strides, boxes, output_size=(2, 2), canonical_box_size=32.0,
      canonical_level=3).sum())(features)
  for grad in grads:
    assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0


def test_multilevel_checks_the_strides():
  with pytest.raises(ValueError, match='strides'):
    multilevel_roi_align([_features()], (8,), jnp.asarray(_BOXES), output_size=(2, 2))
