"""Property tests: after any geometric op, mask, instance masks and boxes still agree
with what the transformed image says, pixel for pixel.

The image is a "coordinate image": channel 0 holds each pixel's row, channel 1 its
column, channel 2 is 1 (the fill is 0). Bilinear resampling of a linear function is
exact, so after a transform each output pixel's channels 0-1 say which source point it
shows, and channel 2 says whether all its bilinear neighbours were inside the source.
Mask, instance masks and boxes are derived from the source positions, so each output
pixel can be checked against the source. Tolerance: pixels whose source point is within
0.01 px of a nearest-neighbour tie (x.5) and pixels touching the fill are not compared
label-for-label (interpolation is undefined there), only their label set is.

The property tests run on both paths: 'host' (data/augment.py, per example in TF) and
'device' (data/augment_jax.py, batched JAX with its own draws; instances it flags
invalid are removed here before checking, which is what the host's 'remove' mode does).
"""
from __future__ import annotations

import math

import hypothesis.strategies as st
import jax
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings

from data import augment, augment_jax, augment_warp
from data.augment_geometric import _about_centre

IGNORE = 255
NUM_LABELS = 5
PROPERTY_SETTINGS = settings(max_examples=30, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
# The device path compiles each new shape and spec (about 1.4 CPU s): fewer examples.
DEVICE_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=10)


def label_of(rows, cols):
  """The semantic label of source pixel (row, col): 3x3 blocks, 5 labels."""
  return ((rows // 3) + 2 * (cols // 3)) % NUM_LABELS


def coordinate_example(height, width, rects):
  """Features whose mask, instance masks and boxes are derived from pixel positions.

  rects: [(r0, c0, r1, c1)] half-open pixel ranges; instance k has class k.
  """
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  image = np.stack([rows, cols, np.ones_like(rows)], -1).astype(np.float32)
  inst = np.zeros([len(rects), height, width], np.uint8)
  for k, (r0, c0, r1, c1) in enumerate(rects):
    inst[k, r0:r1, c0:c1] = 1
  boxes = np.array([[c0, r0, c1, r1] for r0, c0, r1, c1 in rects], np.float32).reshape(-1, 4)
  return dict(image=tf.constant(image), mask=tf.constant(label_of(rows, cols).astype(np.int32)),
              instance_masks=tf.constant(inst), boxes=tf.constant(boxes),
              classes=tf.range(len(rects), dtype=tf.int32), label=tf.constant(7))


def check_sync(out, rects, tight):
  """Asserts every spatial key of `out` agrees with its coordinate image."""
  image = out['image'].numpy()
  mask = out['mask'].numpy()
  src_r, src_c, weight = image[..., 0], image[..., 1], image[..., 2]
  inside = weight > 1 - 1e-4
  no_tie = ((np.abs(src_r - np.floor(src_r) - 0.5) > 1e-2)
            & (np.abs(src_c - np.floor(src_c) - 0.5) > 1e-2))
  sel = inside & no_tie
  near_r, near_c = np.round(src_r).astype(int), np.round(src_c).astype(int)
  # Semantic mask: the label of the nearest source pixel; ignore where all is fill.
  np.testing.assert_array_equal(mask[sel], label_of(near_r[sel], near_c[sel]))
  assert np.all(mask[(weight < 1e-6) & no_tie] == IGNORE)
  assert set(np.unique(mask)) <= set(range(NUM_LABELS)) | {IGNORE}
  assert out['label'].numpy() == 7  # non-spatial keys pass through

  classes = out['classes'].numpy()
  boxes = out['boxes'].numpy()
  inst = out['instance_masks'].numpy()
  assert len(classes) == len(boxes) == len(inst)  # dropped together
  out_h, out_w = mask.shape
  assert inst.shape[1:] == (out_h, out_w)
  assert np.all((boxes >= 0) & (boxes <= [out_w, out_h, out_w, out_h]))
  centre_y, centre_x = np.meshgrid(np.arange(out_h) + 0.5, np.arange(out_w) + 0.5,
                                   indexing='ij')
  # Source point (continuous coordinates) each output pixel centre shows.
  sx, sy = src_c + 0.5, src_r + 0.5
  for k, (r0, c0, r1, c1) in enumerate(rects):
    deep_inside = inside & (sx > c0 + 1e-3) & (sx < c1 - 1e-3) & (sy > r0 + 1e-3) & (sy < r1 - 1e-3)
    if k not in classes:
      # Dropped: with threshold 0, only when it left the frame entirely.
      assert not deep_inside.any(), f'instance {k} dropped although visible'
      continue
    j = int(np.flatnonzero(classes == k)[0])
    in_rect = (near_r >= r0) & (near_r < r1) & (near_c >= c0) & (near_c < c1)
    np.testing.assert_array_equal(inst[j][sel], in_rect[sel].astype(np.uint8))
    x0, y0, x1, y1 = boxes[j]
    in_box = ((centre_x > x0 - 1e-3) & (centre_x < x1 + 1e-3)
              & (centre_y > y0 - 1e-3) & (centre_y < y1 + 1e-3))
    assert np.all(in_box[deep_inside]), f'box {k} misses part of its object'
    if tight:  # axis-aligned transforms: the box is exactly the transformed rectangle
      strictly_in_box = ((centre_x > x0 + 1e-3) & (centre_x < x1 - 1e-3)
                         & (centre_y > y0 + 1e-3) & (centre_y < y1 - 1e-3))
      shown = inside & strictly_in_box
      assert np.all((sx[shown] > c0 - 1e-3) & (sx[shown] < c1 + 1e-3)
                    & (sy[shown] > r0 - 1e-3) & (sy[shown] < r1 + 1e-3)), f'box {k} too big'


PATHS = ('host', 'device')
HOST_ONLY_OPS = ('hue', 'noise')


def augment_with(path: str, spec, example, seed: int, **options):
  """`example` augmented by `spec` on `path`, as TF tensors (check_sync reads .numpy())."""
  if path == 'host':
    return augment.build_policy(spec, **options)(example, tf.constant([seed, 1], tf.int64))
  policy = augment_jax.build_device_policy(spec, drop_mode='invalidate', **options)
  spatial = ('image', 'mask', 'instance_masks', 'boxes', 'instance_valid')
  batch = {k: v.numpy()[np.newaxis] for k, v in example.items() if k in spatial}
  out = jax.jit(policy)(batch, jax.random.PRNGKey(seed))
  out = {k: np.asarray(v)[0] for k, v in out.items()}
  out.update({k: v.numpy() for k, v in example.items() if k not in spatial})
  if 'instance_valid' in out:
    keep = out.pop('instance_valid').astype(bool)
    for key in ('boxes', 'instance_masks', 'classes'):
      out[key] = out[key][keep]
  return {k: tf.constant(v) for k, v in out.items()}


@st.composite
def rect_lists(draw, height, width):
  rects = []
  for _ in range(draw(st.integers(1, 3))):
    r0 = draw(st.integers(0, height - 2))
    c0 = draw(st.integers(0, width - 2))
    rects.append((r0, c0, draw(st.integers(r0 + 1, height)), draw(st.integers(c0 + 1, width))))
  return rects


AXIS_ALIGNED_OPS = st.one_of(
    st.sampled_from(['flip_lr', 'flip_ud', 'flip_lr(1.0)', 'flip_ud(1.0)']),
    st.integers(0, 4).map(lambda k: f'pad_crop({k})'),
    st.floats(0.0, 0.5).map(lambda f: f'translate({f:.3f})'),
    st.tuples(st.floats(0.1, 1.0), st.floats(0.0, 0.9)).map(
        lambda t: f'scale_crop({t[0] * (1 - t[1]):.3f}, {t[0]:.3f})'),
    st.tuples(st.integers(6, 30), st.integers(6, 30)).map(
        lambda t: f'scale_crop(0.3, 1.0, size=({t[0]}, {t[1]}))'),
    st.tuples(st.integers(5, 30), st.integers(5, 30)).map(lambda t: f'random_crop{t}'),
    st.tuples(st.integers(5, 40), st.integers(5, 40)).map(lambda t: f'resize{t}'),
)
ROTATE_OPS = st.floats(0.0, 180.0).map(lambda d: f'rotate({d:.2f})')


def _axis_aligned_ops_keep_every_key_in_sync(path, data, height, width, seed):
  rects = data.draw(rect_lists(height, width))
  spec = data.draw(st.lists(AXIS_ALIGNED_OPS, min_size=1, max_size=3))
  out = augment_with(path, spec, coordinate_example(height, width, rects), seed,
                     min_box_visibility=0.0, min_box_size=0.0)
  check_sync(out, rects, tight=True)


@PROPERTY_SETTINGS
@given(data=st.data(), height=st.integers(8, 24), width=st.integers(8, 24),
       seed=st.integers(0, 2**31 - 1))
def test_axis_aligned_ops_keep_every_key_in_sync(data, height, width, seed):
  _axis_aligned_ops_keep_every_key_in_sync('host', data, height, width, seed)


@DEVICE_SETTINGS
@given(data=st.data(), height=st.integers(8, 24), width=st.integers(8, 24),
       seed=st.integers(0, 2**31 - 1))
def test_device_axis_aligned_ops_keep_every_key_in_sync(data, height, width, seed):
  _axis_aligned_ops_keep_every_key_in_sync('device', data, height, width, seed)


def _rotations_keep_every_key_in_sync(path, data, height, width, seed):
  rects = data.draw(rect_lists(height, width))
  ops = data.draw(st.lists(st.one_of(AXIS_ALIGNED_OPS, ROTATE_OPS), min_size=0, max_size=2))
  spec = ops + [data.draw(ROTATE_OPS)]
  out = augment_with(path, spec, coordinate_example(height, width, rects), seed,
                     min_box_visibility=0.0, min_box_size=0.0)
  check_sync(out, rects, tight=False)


@PROPERTY_SETTINGS
@given(data=st.data(), height=st.integers(8, 24), width=st.integers(8, 24),
       seed=st.integers(0, 2**31 - 1))
def test_rotations_keep_every_key_in_sync(data, height, width, seed):
  _rotations_keep_every_key_in_sync('host', data, height, width, seed)


@DEVICE_SETTINGS
@given(data=st.data(), height=st.integers(8, 24), width=st.integers(8, 24),
       seed=st.integers(0, 2**31 - 1))
def test_device_rotations_keep_every_key_in_sync(data, height, width, seed):
  _rotations_keep_every_key_in_sync('device', data, height, width, seed)


def _photometric_ops_leave_masks_and_boxes_bit_identical(path, data, seed, uint8):
  spec = data.draw(st.lists(st.sampled_from([
      op for op in ('brightness(0.3)', 'contrast(0.5)', 'saturation(0.5)', 'hue(0.2)',
                    'gamma(0.5, 2.0)', 'noise(0.1)', 'cutout(0.4)')
      if path == 'host' or not op.startswith(HOST_ONLY_OPS)]), min_size=1, max_size=4))
  example = coordinate_example(12, 10, [(1, 2, 6, 8), (0, 0, 12, 10)])
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, size=(12, 10, 3))
  image = image.astype(np.uint8) if uint8 else (image / 255).astype(np.float32)
  example['image'] = tf.constant(image)
  out = augment_with(path, spec, example, seed)
  for key in ('mask', 'instance_masks', 'boxes', 'classes', 'label'):
    np.testing.assert_array_equal(out[key].numpy(), example[key].numpy())
  assert out['image'].dtype == example['image'].dtype
  assert out['image'].shape == example['image'].shape


@PROPERTY_SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), uint8=st.booleans())
def test_photometric_ops_leave_masks_and_boxes_bit_identical(data, seed, uint8):
  _photometric_ops_leave_masks_and_boxes_bit_identical('host', data, seed, uint8)


@DEVICE_SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), uint8=st.booleans())
def test_device_photometric_ops_leave_masks_and_boxes_bit_identical(data, seed, uint8):
  _photometric_ops_leave_masks_and_boxes_bit_identical('device', data, seed, uint8)


def test_flip_lr_is_an_exact_mirror_of_every_key():
  example = coordinate_example(6, 9, [(1, 2, 4, 5)])
  out = augment.build_policy('flip_lr(1.0)')(example, tf.constant([0, 0], tf.int64))
  np.testing.assert_array_equal(out['image'].numpy(), example['image'].numpy()[:, ::-1])
  np.testing.assert_array_equal(out['mask'].numpy(), example['mask'].numpy()[:, ::-1])
  np.testing.assert_array_equal(out['instance_masks'].numpy(),
                                example['instance_masks'].numpy()[:, :, ::-1])
  np.testing.assert_allclose(out['boxes'].numpy(), [[9 - 5, 1, 9 - 2, 4]])


def test_quarter_turn_is_counter_clockwise_and_exact():
  example = coordinate_example(8, 8, [(0, 1, 3, 6)])
  matrix = _about_centre(augment_warp.rotation(math.pi / 2), (8, 8))
  out = augment_warp.apply_affine(example, matrix, (8, 8), augment_warp.SyncSettings())
  np.testing.assert_allclose(out['image'].numpy(), np.rot90(example['image'].numpy()),
                             atol=1e-4)
  np.testing.assert_array_equal(out['mask'].numpy(), np.rot90(example['mask'].numpy()))
  np.testing.assert_array_equal(out['instance_masks'].numpy()[0],
                                np.rot90(example['instance_masks'].numpy()[0]))
  # Columns 1..5 and rows 0..2 become rows 8-6..8-1 and columns 0..2.
  np.testing.assert_allclose(out['boxes'].numpy(), [[0, 2, 3, 7]], atol=1e-4)


@pytest.mark.parametrize('threshold, kept', [(0.4, True), (0.6, False)])
def test_boxes_under_the_visibility_threshold_are_dropped_with_their_instance(threshold, kept):
  example = coordinate_example(20, 20, [(0, 0, 10, 10), (5, 5, 15, 15)])
  shift_left = augment_warp.translation(-5.0, 0.0)  # instance 0 becomes half visible
  settings_ = augment_warp.SyncSettings(min_box_visibility=threshold)
  out = augment_warp.apply_affine(example, shift_left, (20, 20), settings_)
  assert list(out['classes'].numpy()) == ([0, 1] if kept else [1])
  assert out['instance_masks'].shape[0] == out['boxes'].shape[0] == (2 if kept else 1)
  np.testing.assert_allclose(out['boxes'].numpy()[-1], [0, 5, 10, 15])
  assert out['instance_masks'].numpy()[-1, 5:15, 0:10].all()


def test_invalidate_mode_keeps_n_static_and_marks_dropped_instances():
  example = coordinate_example(20, 20, [(0, 0, 10, 10), (5, 5, 15, 15)])
  settings_ = augment_warp.SyncSettings(min_box_visibility=0.6, drop_mode='invalidate')
  out = augment_warp.apply_affine(example, augment_warp.translation(-5.0, 0.0), (20, 20),
                                  settings_)
  np.testing.assert_array_equal(out['instance_valid'].numpy(), [False, True])
  np.testing.assert_array_equal(out['boxes'].numpy()[0], [0, 0, 0, 0])
  assert not out['instance_masks'].numpy()[0].any()
  assert out['classes'].shape == (2,)


def test_mask_with_channel_axis_bool_instance_masks_and_custom_ignore():
  example = coordinate_example(10, 10, [(2, 2, 8, 8)])
  example['mask'] = example['mask'][..., tf.newaxis]
  example['instance_masks'] = tf.cast(example['instance_masks'], tf.bool)
  policy = augment.build_policy('rotate(45)', fill={'mask': 11})
  out = policy(example, tf.constant([4, 4], tf.int64))
  assert out['mask'].shape == (10, 10, 1)
  assert out['instance_masks'].dtype == tf.bool
  assert set(np.unique(out['mask'].numpy())) <= set(range(NUM_LABELS)) | {11}


def test_uint8_image_is_rounded_not_truncated():
  image = tf.constant(np.tile([[0, 103]], (4, 2))[..., None].astype(np.uint8))  # [4, 4, 1]
  half_pixel = augment_warp.translation(0.5, 0.0)
  out = augment_warp.apply_affine({'image': image}, half_pixel, (4, 4),
                                  augment_warp.SyncSettings())
  assert out['image'].dtype == tf.uint8
  assert out['image'].numpy()[0, 1, 0] == 52  # (0 + 103) / 2 = 51.5: truncation gives 51
