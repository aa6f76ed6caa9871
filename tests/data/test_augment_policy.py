"""Policies: parsing from a spec, stateless seeds, graph mode in tf.data, static shapes."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data import augment, pipeline
from data.augment_ops import OPS

SEG_POLICY = 'flip_lr|rotate(15)|scale_crop(0.8, 1.0)|brightness(0.2)|contrast(0.2)'
FASHION_POLICY = 'flip_lr|rotate(10)|translate(0.1)|pad_crop(2)|saturation(0.5)|hue(0.2)'


def _example(height=16, width=20, n=2, seed=0):
  rng = np.random.default_rng(seed)
  return dict(
      image=tf.constant(rng.integers(0, 256, (height, width, 3)).astype(np.uint8)),
      mask=tf.constant(rng.integers(0, 4, (height, width)).astype(np.int32)),
      instance_masks=tf.constant(rng.integers(0, 2, (n, height, width)).astype(np.uint8)),
      boxes=tf.constant([[2.0, 3.0, 15.0, 12.0]] * n),
      classes=tf.range(n, dtype=tf.int32))


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def _differs(a, b):
  return any(np.asarray(a[k]).shape != np.asarray(b[k]).shape
             or not np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_string_and_list_specs_build_the_same_policy():
  from_string = augment.build_policy(SEG_POLICY)
  from_list = augment.build_policy(SEG_POLICY.split('|'))
  assert str(from_string) == str(from_list) == 'flip_lr|rotate|scale_crop|brightness|contrast'
  seed = tf.constant([1, 2], tf.int64)
  _assert_same(from_string(_example(), seed), from_list(_example(), seed))


@pytest.mark.parametrize('spec', ['', []])
def test_empty_spec_is_the_identity(spec):
  example = _example()
  _assert_same(augment.build_policy(spec)(example, tf.constant([0, 0], tf.int64)), example)


@pytest.mark.parametrize('spec, fragment', [
    ('flip_lr|spin(3)', "unknown augmentation op 'spin'"),
    ('rotate', 'missing a required argument'),
    ('rotate(1, 2)', 'too many positional arguments'),
    ('rotate(500)', 'max_degrees must lie in [0, 180]'),
    ('scale_crop(size=-3)', 'size must be a positive int'),
    ('brightness(x)', 'cannot parse'),
    ('brightness(0.1', 'cannot parse'),
])
def test_bad_specs_raise_listing_the_valid_names(spec, fragment):
  with pytest.raises(ValueError) as error:
    augment.build_policy(spec)
  assert fragment in str(error.value)
  assert 'valid names: ' + ', '.join(OPS.names()) in str(error.value)


def test_every_op_is_registered_once_under_its_own_name():
  assert set(OPS.names()) == {
      'flip_lr', 'flip_ud', 'rotate', 'scale_crop', 'random_crop', 'translate', 'pad_crop',
      'resize', 'brightness', 'contrast', 'saturation', 'hue', 'gamma', 'noise', 'cutout'}
  with pytest.raises(ValueError, match='registered twice'):
    OPS.register('rotate')(lambda: None)


def test_same_seed_same_output_and_each_example_its_own_draw():
  policy = augment.build_policy(SEG_POLICY + '|noise(0.05)|cutout(0.3)')
  seed_a = pipeline.example_seed(0, 0, tf.constant(5))
  seed_b = pipeline.example_seed(0, 0, tf.constant(6))
  _assert_same(policy(_example(), seed_a), policy(_example(), seed_a))
  assert _differs(policy(_example(), seed_a), policy(_example(), seed_b))
  assert _differs(policy(_example(), seed_a), policy(_example(), pipeline.example_seed(0, 1, 5)))


def test_ops_draw_independently_of_each_other():
  """Op i folds i into the seed: two identical ops in one policy make different draws."""
  example = {'image': tf.fill([8, 8, 1], tf.constant(128, tf.uint8))}
  once = augment.build_policy('brightness(0.3)')
  twice = augment.build_policy('brightness(0.3)|brightness(0.3)')
  seed = tf.constant([3, 9], tf.int64)
  first = int(once(example, seed)['image'][0, 0, 0]) - 128
  both = int(twice(example, seed)['image'][0, 0, 0]) - 128
  assert both != 2 * first


def test_policy_in_train_batches_is_reproducible_across_runs():
  examples = {k: tf.stack([v] * 6) for k, v in _example(n=1).items()}
  dataset = tf.data.Dataset.from_tensor_slices(examples)
  policy = augment.build_policy(SEG_POLICY)

  def run():
    batches = pipeline.train_batches(
        dataset, batch_size=3, seed=4, epoch=0, augment_fn=policy,
        preprocess_fn=lambda f: {'image': f['image'], 'mask': f['mask']})
    return list(pipeline.as_numpy(batches))

  first, second = run(), run()
  for a, b in zip(first, second):
    _assert_same(a, b)
  assert not np.array_equal(first[0]['image'][0], first[0]['image'][1])  # per-example draws


def test_crop_to_a_fixed_size_gives_static_shapes_from_unknown_input_shapes():
  def generate():
    for h, w in [(30, 40), (50, 24)]:
      example = _example(h, w)
      yield {k: v.numpy() for k, v in example.items()}
  signature = dict(image=tf.TensorSpec([None, None, 3], tf.uint8),
                   mask=tf.TensorSpec([None, None], tf.int32),
                   instance_masks=tf.TensorSpec([None, None, None], tf.uint8),
                   boxes=tf.TensorSpec([None, 4], tf.float32),
                   classes=tf.TensorSpec([None], tf.int32))
  policy = augment.build_policy('flip_lr|scale_crop(0.3, 1.0, size=(16, 24))|rotate(5)|hue(0.1)')
  dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).enumerate()
  dataset = dataset.map(lambda i, f: policy(f, pipeline.example_seed(0, 0, i)))
  spec = dataset.element_spec
  assert spec['image'].shape == (16, 24, 3)
  assert spec['mask'].shape == (16, 24)
  assert spec['instance_masks'].shape.as_list() == [None, 16, 24]
  assert spec['boxes'].shape.as_list() == [None, 4]
  batch = next(iter(dataset.map(lambda f: {'image': f['image'], 'mask': f['mask']}).batch(2)))
  assert batch['image'].shape == (2, 16, 24, 3)


def test_fashion_mnist_shaped_images_work_in_graph_mode():
  images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
  dataset = tf.data.Dataset.from_tensor_slices({'image': images, 'label': np.arange(4)})
  batches = pipeline.train_batches(dataset, batch_size=4, seed=0, epoch=0,
                                   augment_fn=augment.build_policy(FASHION_POLICY))
  assert batches.element_spec['image'].shape == (4, 28, 28, 1)
  batch = next(pipeline.as_numpy(batches))
  assert batch['image'].dtype == np.uint8
  assert sorted(batch['label']) == [0, 1, 2, 3]


def test_saturation_and_hue_are_no_ops_on_one_channel_and_reject_two():
  gray = {'image': tf.constant(np.arange(16, dtype=np.uint8).reshape(4, 4, 1))}
  policy = augment.build_policy('saturation(0.9)|hue(0.5)')
  _assert_same(policy(gray, tf.constant([0, 1], tf.int64)), gray)
  with pytest.raises(ValueError, match=r"'saturation'.*1 or 3 channels"):
    policy({'image': tf.zeros([4, 4, 2], tf.uint8)}, tf.constant([0, 1], tf.int64))


@pytest.mark.parametrize('spec', ['brightness(0.5)', 'contrast(0.9)', 'saturation(0.9)',
                                  'hue(0.4)', 'gamma(0.3, 0.5)', 'noise(0.2)', 'cutout(0.5)'])
def test_each_photometric_op_changes_the_image_and_keeps_its_dtype(spec):
  rng = np.random.default_rng(1)
  for image in (rng.integers(30, 220, (12, 12, 3)).astype(np.uint8),
                rng.uniform(0.1, 0.9, (12, 12, 3)).astype(np.float32)):
    out = augment.build_policy(spec)({'image': tf.constant(image)}, tf.constant([7, 7], tf.int64))
    assert out['image'].dtype == image.dtype
    assert not np.array_equal(out['image'].numpy(), image), spec


def test_float_images_keep_their_dtype_through_geometric_ops():
  example = _example()
  example['image'] = tf.cast(example['image'], tf.float32) / 255.0
  out = augment.build_policy('rotate(30)|resize(8, 10)')(example, tf.constant([1, 1], tf.int64))
  assert out['image'].dtype == tf.float32 and out['image'].shape == (8, 10, 3)
  assert out['mask'].dtype == tf.int32 and out['mask'].shape == (8, 10)


@pytest.mark.parametrize('spec', ['translate(0.5, 0.0)', 'translate(0.5, 0.0)|brightness(0.0)'])
def test_image_fill_is_in_the_image_dtype_units_with_or_without_photometric_ops(spec):
  example = {'image': tf.zeros([4, 40, 1], tf.uint8)}
  policy = augment.build_policy(spec, fill={'image': 128})
  seeds = [tf.constant([0, i], tf.int64) for i in range(20)]
  shifted = [policy(example, s)['image'].numpy() for s in seeds]
  values = set(np.unique(np.concatenate([x.ravel() for x in shifted])))
  assert values == {0, 128}
