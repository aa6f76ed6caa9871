"""The assembled Mask R-CNN: shapes in both modes, the backbone contract, and learning."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data import shapes
from models.mask_rcnn.anchors import generate_anchors
from models.mask_rcnn.backbone import ResNetFPN
from models.mask_rcnn.model import MaskRCNN
from models.mask_rcnn.rpn import RPNHead
from tasks.instance import task as instance_loss

TINY = dict(num_classes=3, stem_width=8, stage_widths=(8, 16, 16), fpn_width=16,
            fc_width=32, mask_head_width=16, rpn_pre_nms_topk_train=200,
            rpn_post_nms_topk_train=32, num_rois=32, num_mask_rois=8, max_detections=5)


def _batch(count=4, size=32, seed=0):
  arrays = shapes.make_split(count, seed, 'train', image_size=(size, size), max_instances=3,
                             size_range=(0.15, 0.3))
  arrays.pop('mask')
  return {k: jnp.asarray(v) for k, v in arrays.items()}


def test_backbone_levels_and_rpn_outputs_line_up_with_the_anchors():
  images = jnp.zeros((2, 32, 48, 3))
  backbone = ResNetFPN(stem_width=8, stage_widths=(8, 16, 16), fpn_width=16)
  features, _ = backbone.init_with_output(jax.random.PRNGKey(0), images)
  assert [f.shape for f in features] == [(2, 16, 24, 16), (2, 8, 12, 16), (2, 4, 6, 16)]
  (logits, deltas), _ = RPNHead(3, 16).init_with_output(jax.random.PRNGKey(0), features)
  anchors = generate_anchors((32, 48), (2, 4, 8), (8., 16., 32.), (0.5, 1., 2.))
  chex.assert_shape([logits, deltas], [(2, len(anchors)), (2, len(anchors), 4)])


def test_backbone_rejects_sizes_that_are_not_multiples_of_the_stride():
  with pytest.raises(ValueError, match='multiple of the coarsest stride 8'):
    ResNetFPN(stage_widths=(8, 8, 8)).init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 32, 3)))


def test_inference_and_training_outputs_have_static_shapes():
  model = MaskRCNN(**TINY)
  batch = _batch()
  # Jitted as the loop runs them (op by op, the model's thousands of small ops took
  # ~3 min to dispatch on a 2-core CPU; traced, every shape is fixed at compile time).
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  detections = jax.jit(model.apply)(variables, batch['image'].astype(jnp.float32) / 255)
  chex.assert_shape([detections['boxes_xyxy'], detections['scores'], detections['masks']],
                    [(4, 5, 4), (4, 5), (4, 5, 32, 32)])
  inputs = instance_loss.instance_inputs(0.5, 0.25)(batch)
  train_apply = jax.jit(lambda v, *x: model.apply(v, *x, train=True, mutable=['batch_stats'],
                                                  rngs={'dropout': jax.random.PRNGKey(1)}))
  outputs, _ = train_apply(variables, *inputs)
  chex.assert_shape([outputs['class_logits'], outputs['mask_logits'], outputs['mask_targets']],
                    [(4, 32, 4), (4, 8, 28, 28), (4, 8, 28, 28)])
  # Ground-truth boxes join the proposals, so every valid object yields a foreground RoI.
  objects = int(jnp.sum(batch['instance_valid']))
  assert int(jnp.sum(outputs['roi_classes'] > 0)) >= objects
  assert int(jnp.sum(outputs['mask_valid'])) >= min(objects, 4 * 8) // 2


def test_a_few_train_steps_lower_every_loss_term():
  model = MaskRCNN(**TINY)
  batch = _batch(count=4, seed=3)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  inputs_fn = instance_loss.instance_inputs(0.5, 0.25)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      outputs, updates = model.apply({'params': p, 'batch_stats': batch_stats},
                                     *inputs_fn(batch), train=True, mutable=['batch_stats'],
                                     rngs={'dropout': jax.random.PRNGKey(7)})
      loss, metrics = instance_loss.instance_loss(outputs, batch)
      return loss, (metrics, updates['batch_stats'])
    (_, (metrics, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, metrics

  params, stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  history = []
  for _ in range(100):
    params, stats, opt_state, metrics = step(params, stats, opt_state)
    history.append(jax.device_get(metrics))
  for h in history:
    # roi_box is normalised by all sampled RoIs (detectron2), so it grows with the
    # number of foreground RoIs as the proposals improve; per foreground RoI it falls.
    h['roi_box'] = h['roi_box'] / h['foreground_rois']
  for term in instance_loss.LOSS_TERMS + ('loss',):
    first = np.mean([h[term] for h in history[:5]])
    last = np.mean([h[term] for h in history[-5:]])
    assert last < first, (term, first, last)
