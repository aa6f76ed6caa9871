"""The R50-FPN backbone option of the Mask R-CNN, and bfloat16 reaching its heads."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.mask_rcnn.backbone import ResNet50FPN
from models.mask_rcnn.model import MaskRCNN
from train import optimizer, steps
from tasks.instance.task import instance_task
from train.state import create_train_state
from tests.models.mask_rcnn.test_model import TINY, _batch

R50 = dict(num_classes=3, backbone='resnet50_fpn', fpn_width=32, freeze_at=2,
           anchor_sizes=(8., 16., 32., 64., 128.), canonical_box_size=32., canonical_level=4,
           fc_width=32, mask_head_width=16, rpn_pre_nms_topk_train=200,
           rpn_post_nms_topk_train=32, num_rois=32, num_mask_rois=8, max_detections=5)


def test_r50_fpn_levels_are_p2_to_p6():
  features, variables = jax.eval_shape(lambda: ResNet50FPN(fpn_width=32).init_with_output(
      jax.random.PRNGKey(0), jnp.zeros((2, 64, 96, 3))))
  chex.assert_shape(features, [(2, 16, 24, 32), (2, 8, 12, 32), (2, 4, 6, 32), (2, 2, 3, 32),
                               (2, 1, 2, 32)])
  assert 'trunk' in variables['params'] and 'trunk' in variables['frozen']


def test_r50_fpn_rejects_sizes_that_are_not_multiples_of_32():
  with pytest.raises(ValueError, match='multiple of the coarsest stride 32'):
    jax.eval_shape(lambda: ResNet50FPN().init(jax.random.PRNGKey(0), jnp.zeros((1, 48, 64, 3))))


@pytest.mark.slow  # ~40 s: compiles a ResNet-50 Mask R-CNN train step on 2 cores
def test_r50_train_step_leaves_the_frozen_trunk_alone():
  """One SGD step with momentum and weight decay (the coco_r50fpn optimizer): the loss
  is finite, the trainable trunk moves, and the frozen collection (stem, layer1, every
  BatchNorm) comes back bit-identical."""
  model = MaskRCNN(**R50)
  task = instance_task(0.5, 0.25)
  tx, _ = optimizer.build_optimizer({'name': 'sgd', 'learning_rate': 0.02,
                                     'weight_decay': 1e-4}, 10)
  state = jax.jit(lambda: create_train_state(model, tx, (1, 64, 64, 3),
                                             jax.random.PRNGKey(0)))()
  assert 'layer1_block0' not in state.params['backbone']['trunk']
  before = jax.device_get(state)
  step = jax.jit(functools.partial(steps.train_step, loss_fn=task.loss_fn,
                                   inputs_fn=task.inputs_fn))
  state, metrics = step(state, _batch(count=2, size=64))
  state, metrics = step(state, _batch(count=2, size=64, seed=1))
  assert np.isfinite(float(metrics['loss']))
  chex.assert_trees_all_equal(state.model_state['frozen'], before.model_state['frozen'])
  kernel = lambda s: s.params['backbone']['trunk']['layer2_block0']['conv2']['kernel']
  assert not np.allclose(kernel(state), kernel(before))


def test_bfloat16_reaches_the_heads_and_their_outputs_are_float32():
  """Dtypes only, so the whole check is abstract (jax.eval_shape: nothing compiles)."""
  model = MaskRCNN(dtype=jnp.bfloat16, **TINY)
  batch = _batch(count=2, size=32)
  images = batch['image'].astype(jnp.float32) / 255
  targets = {k: batch[k] for k in ('boxes', 'classes', 'instance_masks', 'instance_valid')}

  def run():
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    outputs, state = model.apply(
        variables, images, targets, train=True, rngs={'dropout': jax.random.PRNGKey(1)},
        mutable=['batch_stats', 'intermediates'], capture_intermediates=True)
    loss, _ = instance_task(0.5, 0.25).loss_fn(outputs, batch)
    return variables, outputs, state['intermediates'], loss, model.apply(variables, images)

  variables, outputs, seen, loss, detections = jax.eval_shape(run)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
  assert all(f.dtype == jnp.bfloat16 for f in seen['backbone']['__call__'][0])
  for head, layer in (('rpn', 'conv'), ('box_head', 'fc1'), ('box_head', 'fc2'),
                      ('mask_head', 'conv0'), ('mask_head', 'upsample')):
    assert seen[head][layer]['__call__'][0].dtype == jnp.bfloat16, (head, layer)
  for key in ('rpn_logits', 'rpn_deltas', 'class_logits', 'roi_box_deltas', 'mask_logits'):
    assert outputs[key].dtype == jnp.float32, key
  assert loss.dtype == jnp.float32
  for key in ('scores', 'boxes_xyxy', 'masks'):
    assert detections[key].dtype == jnp.float32, key
