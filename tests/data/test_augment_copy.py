"""The copy fast path of data/augment_warp.py: a flip or whole-pixel shift gives exactly
what ImageProjectiveTransformV3's resampling gives, and anything else is resampled."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from data import augment_warp as warp

H, W = 13, 17


def _example(seed):
  rng = np.random.default_rng(seed)
  return {'image': tf.constant(rng.integers(0, 256, (H, W, 3)), tf.uint8),
          'float_image': tf.constant(rng.random((H, W, 1)), tf.float32),
          'mask': tf.constant(rng.integers(0, 5, (H, W, 1)), tf.int32),
          'instances': tf.constant(rng.random((H, W, 4)) > 0.5)}


def _flip(width):
  return tf.linalg.matmul(warp.translation(width, 0.0), warp.scaling(-1.0, 1.0))


SHIFTS_AND_FLIPS = [
    (warp.translation(3.0, -2.0), (H, W)),
    (warp.translation(-5.0, 4.0), (9, 11)),                            # a crop
    (warp.translation(2.0, 3.0), (H + 6, W + 4)),                      # a pad
    (_flip(float(W)), (H, W)),
    (tf.linalg.matmul(warp.translation(-2.0, 1.0), _flip(float(W))), (H, W)),
    (tf.linalg.matmul(warp.translation(0.0, float(H)), warp.scaling(1.0, -1.0)), (H, W)),
]


@pytest.mark.parametrize('case', range(len(SHIFTS_AND_FLIPS)))
def test_copy_equals_resampling_for_flips_and_whole_pixel_shifts(case):
  matrix, out_size = SHIFTS_AND_FLIPS[case]
  inverse = tf.linalg.inv(matrix)
  copy = warp.index_map(inverse, (H, W), out_size)
  assert bool(copy.exact)
  ex = _example(case)
  for key, fn, fill in (('image', warp.warp_image, 7.0), ('float_image', warp.warp_image, 0.5),
                        ('mask', warp.warp_labels, 255), ('instances', warp.warp_labels, 0)):
    fast = fn(ex[key], inverse, out_size, fill, copy)
    slow = fn(ex[key], inverse, out_size, fill)
    assert fast.dtype == slow.dtype and fast.shape == slow.shape, key
    np.testing.assert_array_equal(fast.numpy(), slow.numpy(), err_msg=key)


@pytest.mark.parametrize('matrix', [
    warp.translation(0.5, 0.0),                          # half a pixel: interpolates
    warp.scaling(1.5, 1.5),
    warp.rotation(math.radians(10.0)),
    warp.rotation(math.pi / 2),                          # exact, but not axis-aligned
])
def test_anything_else_is_resampled(matrix):
  inverse = tf.linalg.inv(matrix)
  assert not bool(warp.index_map(inverse, (H, W), (H, W)).exact)


def test_policy_output_is_unchanged_by_the_copy_path():
  ex = _example(9)
  features = {'image': ex['image'], 'mask': ex['mask'][..., 0],
              'instance_masks': tf.transpose(ex['instances'], [2, 0, 1]),
              'boxes': tf.constant([[1.0, 2.0, 6.0, 9.0]] * 4)}
  matrix = tf.linalg.matmul(warp.translation(-1.0, 2.0), _flip(float(W)))
  settings = warp.SyncSettings()
  out = warp.apply_affine(features, matrix, (H, W), settings)
  inverse = tf.linalg.inv(matrix)
  np.testing.assert_array_equal(out['image'].numpy(),
                                warp.warp_image(ex['image'], inverse, (H, W), 0.0).numpy())
  np.testing.assert_array_equal(
      out['mask'].numpy(), warp.warp_labels(ex['mask'], inverse, (H, W), 255)[..., 0].numpy())
