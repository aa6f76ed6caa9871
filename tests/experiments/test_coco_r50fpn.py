"""The config of experiments/instance_coco_r50fpn.py: detectron2's sizes, and its
ImageNet starting point read from `init_from`. Abstract (jax.eval_shape): the full-size
model is traced, never compiled."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import instance_coco, instance_coco_r50fpn
from train.config_check import check_config
from models import build_model
from models.import_torchvision import torch_key


@pytest.fixture(scope='module')
def r50fpn():
  config = instance_coco_r50fpn.get_config()
  model = build_model({**config.model.to_dict(), 'num_classes': 80})
  return config, model


def test_full_size_train_outputs_have_detectron2s_sizes(r50fpn):
  config, model = r50fpn
  height, width = config.data.image_size
  n = config.data.max_instances
  targets = {'boxes': jnp.zeros((1, n, 4)), 'classes': jnp.zeros((1, n), jnp.int32),
             'instance_masks': jnp.zeros((1, n, height, width), jnp.uint8),
             'instance_valid': jnp.zeros((1, n), bool)}

  def train_outputs():
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, height, width, 3)))
    return model.apply(variables, jnp.zeros((1, height, width, 3)), targets, train=True,
                       rngs={'dropout': jax.random.PRNGKey(1)}, mutable=['frozen'])[0]

  outputs = jax.eval_shape(train_outputs)
  # Anchors: 3 ratios on P2-P6 of a 1024 x 1024 image (strides 4..64).
  anchors = 3 * sum((1024 // s) ** 2 for s in (4, 8, 16, 32, 64))
  assert outputs['rpn_logits'].shape == (1, anchors)
  assert outputs['class_logits'].shape == (1, 512, 81)
  assert outputs['mask_logits'].shape == (1, 128, 28, 28)


def test_init_from_puts_the_file_into_the_backbone_trunk(r50fpn, tmp_path):
  safetensors_numpy = pytest.importorskip('safetensors.numpy')
  config, model = r50fpn
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 64, 64, 3))))
  rng = np.random.default_rng(0)
  state, expected = {}, {}
  for collection in template.values():
    for path, leaf in jax.tree_util.tree_flatten_with_path(collection['backbone']['trunk'])[0]:
      keys = tuple(p.key for p in path)
      value = rng.normal(size=leaf.shape).astype(np.float32)
      expected[keys] = value
      # contiguous: safetensors.numpy writes the buffer as it lies, ignoring strides.
      state[torch_key(keys)] = np.ascontiguousarray(
          value.transpose(3, 2, 0, 1) if value.ndim == 4 else value)
  path = str(tmp_path / 'resnet50.safetensors')
  safetensors_numpy.save_file(state, path)
  config.init_from = path
  loaded = instance_coco.init_fn(config)(template)
  for collection in loaded.values():
    trunk = collection['backbone']['trunk']
    for keys, leaf in jax.tree_util.tree_flatten_with_path(trunk)[0]:
      np.testing.assert_array_equal(leaf, expected[tuple(p.key for p in keys)])
  assert instance_coco.init_fn(instance_coco.get_config('coco128')) is None


def test_the_gpu_shaped_config_augments_in_the_step(r50fpn):
  config, _ = r50fpn
  assert config.augment_on == 'device'
  check_config(config)  # flip_lr is a device op
