"""The device path (data/augment_jax.py) fed the host's draws gives the host's output.

Tolerances, for the same draws (the host's `Policy.draw`, stacked over examples):
- image: uint8 values differ by at most 1 level, in under 0.5% of the values (float32
  order of operations decides a rounding at x.5; measured: 0 to 1 value per thousands);
- mask, instance masks: identical, except output pixels whose source point lies within
  1e-3 px of a nearest-neighbour tie (index x.5, computed here in float64 from the host's
  matrix): there the float32 rounding of the two matrix products decides (only resizes by
  such factors put pixels on ties; flips, whole-pixel shifts and crops never do);
- boxes: within 1e-4 px (+ 1e-6 relative); instance_valid: identical.
"""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from data import augment, augment_jax
from data.augment_spec import Affine, Photometric

SPECS = [
    'flip_lr|pad_crop(2)',                                                  # cifar10
    'flip_lr|rotate(10)|brightness(0.1)',                                   # shapes
    'flip_lr|scale_crop(0.5, 1.0, 1.2, 1.45, size=(14, 19))|brightness(0.15)|contrast(0.15)',
    'flip_lr|flip_ud|rotate(180)|random_crop(12, 12)|brightness(0.1)|contrast(0.2)',
    'flip_lr|flip_ud|brightness(0.05)|contrast(0.3)',                       # nuclei
    'translate(0.3)|scale_crop(0.2, 1.0)|rotate(45)',
    'saturation(0.5)|gamma(0.5, 2.0)|cutout(0.4)|resize(30, 17)|flip_ud(1.0)',
    'random_crop(26, 30)|contrast(0.9)|pad_crop(3)',                        # crop > frame
]
HEIGHT, WIDTH, N, BATCH = 20, 24, 3, 6


def _example(index: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(index)
  x0, y0 = rng.uniform(0, WIDTH - 4, N), rng.uniform(0, HEIGHT - 4, N)
  boxes = np.stack([x0, y0, x0 + rng.uniform(1, 10, N), y0 + rng.uniform(1, 10, N)], -1)
  return dict(image=rng.integers(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8),
              mask=rng.integers(0, 5, (HEIGHT, WIDTH)).astype(np.int32),
              instance_masks=rng.integers(0, 2, (N, HEIGHT, WIDTH)).astype(np.uint8),
              boxes=boxes.astype(np.float32), classes=np.arange(1, N + 1, dtype=np.int32),
              instance_valid=np.array([True, True, False]))


def host_draws_and_outputs(policy, examples, seed=5):
  """(the host's per-example draws stacked as the device's batched draws, host outputs)."""
  draws, outputs = [], []
  for index, example in enumerate(examples):
    features = {k: tf.constant(v) for k, v in example.items()}
    stages = policy.draw(tf.constant([index, seed], tf.int64), augment.image_size(features))
    draws.append(stages)
    outputs.append({k: v.numpy() for k, v in policy.apply(features, stages).items()})
  stacked = []
  for j, stage in enumerate(draws[0]):
    if isinstance(stage, Affine):
      stacked.append(Affine(np.stack([d[j].matrix.numpy() for d in draws]),
                            tuple(int(s) for s in stage.size)))
    else:
      stacked.append(Photometric(stage.name, {k: np.stack([d[j].values[k].numpy()
                                                           for d in draws])
                                              for k in stage.values}))
  return stacked, {k: np.stack([o[k] for o in outputs]) for k in outputs[0]}


def _tie_pixels(stacked):
  """[B, H', W'] True where the last resampling's source point is within 1e-3 px of a
  nearest tie (earlier resamplings in SPECS are whole-pixel shifts: no ties)."""
  affines = [s for s in stacked if isinstance(s, Affine)]
  if not affines:
    return None
  last = affines[-1]
  out_h, out_w = last.size
  rows, cols = np.meshgrid(np.arange(out_h) + 0.5, np.arange(out_w) + 0.5, indexing='ij')
  ties = []
  for matrix in last.matrix.astype(np.float64):
    inverse = np.linalg.inv(matrix)
    x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2] - 0.5
    y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2] - 0.5
    near = lambda v: np.abs(np.abs(v - np.floor(v)) - 0.5) < 1e-3
    ties.append(near(x) | near(y))
  return np.stack(ties)


@pytest.mark.parametrize('spec', SPECS)
def test_the_host_draws_give_the_host_output_on_the_device(spec):
  host = augment.build_policy(spec, drop_mode='invalidate')
  device = augment_jax.build_device_policy(spec, drop_mode='invalidate')
  examples = [_example(i) for i in range(BATCH)]
  stacked, expected = host_draws_and_outputs(host, examples)
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  out = {k: np.asarray(v) for k, v in jax.jit(device.apply)(batch, stacked).items()}

  assert set(out) == set(expected)
  for key in expected:
    assert out[key].shape == expected[key].shape and out[key].dtype == expected[key].dtype, key
  image_diff = np.abs(out['image'].astype(int) - expected['image'].astype(int))
  assert image_diff.max() <= 1 and np.mean(image_diff > 0) < 0.005
  ties = _tie_pixels(stacked)
  exact = np.ones(out['mask'].shape, bool) if ties is None else ~ties
  np.testing.assert_array_equal(out['mask'][exact], expected['mask'][exact])
  np.testing.assert_array_equal(out['instance_masks'].transpose(1, 0, 2, 3)[:, exact],
                                expected['instance_masks'].transpose(1, 0, 2, 3)[:, exact])
  np.testing.assert_allclose(out['boxes'], expected['boxes'], atol=1e-4, rtol=1e-6)
  np.testing.assert_array_equal(out['instance_valid'], expected['instance_valid'])
  np.testing.assert_array_equal(out['classes'], expected['classes'])


def test_a_float_coordinate_image_agrees_within_1e_4():
  """Bilinear on a linear function is exact: the resampled coordinates agree closely."""
  spec = 'rotate(30)|scale_crop(0.3, 1.0)'
  host = augment.build_policy(spec)
  device = augment_jax.build_device_policy(spec)
  rows, cols = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing='ij')
  image = np.stack([rows, cols, np.ones_like(rows)], -1).astype(np.float32)
  stacked, expected = host_draws_and_outputs(host, [{'image': image}] * BATCH)
  out = np.asarray(device.apply({'image': np.stack([image] * BATCH)}, stacked)['image'])
  np.testing.assert_allclose(out, expected['image'], atol=1e-4)


def test_device_draws_are_per_example_and_repeat_with_the_key():
  device = augment_jax.build_device_policy('flip_lr|rotate(20)|brightness(0.3)')
  batch = {'image': np.stack([_example(0)['image']] * 4)}
  key = jax.random.PRNGKey(3)
  first = np.asarray(jax.jit(device)(batch, key)['image'])
  np.testing.assert_array_equal(first, np.asarray(jax.jit(device)(batch, key)['image']))
  assert len({first[i].tobytes() for i in range(4)}) == 4  # each example its own draw
  other = np.asarray(device(batch, jax.random.PRNGKey(4))['image'])
  assert not np.array_equal(first, other)


@pytest.mark.parametrize('spec, fragment', [
    ('hue(0.1)', "unknown augmentation op 'hue'"),
    ('noise(0.1)', "unknown augmentation op 'noise'"),
    ('rotate(500)', 'max_degrees must lie in [0, 180]'),
    ('rotate', 'missing a required argument'),
])
def test_host_only_ops_and_bad_arguments_raise_listing_the_device_ops(spec, fragment):
  with pytest.raises(ValueError) as error:
    augment_jax.build_device_policy(spec)
  assert fragment in str(error.value)
  assert 'valid names: ' + ', '.join(augment_jax.DEVICE_OPS.names()) in str(error.value)


def test_boxes_need_invalidate_mode_on_the_device():
  example = _example(0)
  batch = {k: v[None] for k, v in example.items()}
  with pytest.raises(ValueError, match="drop_mode='invalidate'"):
    augment_jax.build_device_policy('flip_lr')(batch, jax.random.PRNGKey(0))


def test_the_device_module_imports_no_tensorflow():
  code = ('import sys; import data.augment_jax; '
          'assert "tensorflow" not in sys.modules, "data.augment_jax imported tensorflow"')
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  subprocess.run([sys.executable, '-c', code], check=True, cwd=root)
