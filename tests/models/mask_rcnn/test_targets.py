"""RoI sampling and mask targets of models/mask_rcnn/targets.py on hand-made cases."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from models.mask_rcnn import box_ops, targets

GT_BOXES = jnp.array([[4., 4., 20., 20.], [30., 30., 50., 40.], [0., 0., 0., 0.]])
GT_CLASSES = jnp.array([2, 3, 0])
GT_VALID = jnp.array([True, True, False])


def _proposals():
  return jnp.array([[5., 5., 20., 21.],     # IoU 0.88 with gt 0: foreground, class 2
                    [31., 30., 50., 41.],   # IoU 0.86 with gt 1: foreground, class 3
                    [40., 0., 60., 10.],    # no overlap: background
                    [4., 4., 12., 12.],     # IoU 0.25 with gt 0: background
                    [0., 0., 1., 1.]])      # marked invalid below


def test_sample_rois_puts_foreground_first_and_labels_it():
  valid = jnp.array([True, True, True, True, False])
  out = targets.sample_rois(_proposals(), valid, GT_BOXES, GT_CLASSES, GT_VALID,
                            jax.random.PRNGKey(0), num_rois=8, positive_fraction=0.5)
  chex.assert_shape(out['rois_xyxy'], (8, 4))
  classes = np.asarray(out['roi_classes'])
  valid_rois = np.asarray(out['roi_valid'])
  # 2 proposals + 2 gt boxes are foreground, 2 proposals background, the invalid
  # proposal and the padding gt never appear as valid RoIs.
  assert valid_rois.sum() == 6
  np.testing.assert_array_equal(np.sort(classes[:4]), [2, 2, 3, 3])
  assert (classes[4:6] == 0).all() and valid_rois[:6].all() and not valid_rois[6:].any()
  # The delta targets decode back onto the matched ground-truth box.
  decoded = box_ops.decode_boxes(out['roi_deltas'][:4], out['rois_xyxy'][:4],
                                 weights=targets.ROI_BOX_WEIGHTS)
  np.testing.assert_allclose(decoded, GT_BOXES[out['roi_matched'][:4]], atol=1e-3)


def test_sample_rois_caps_the_foreground_fraction():
  valid = jnp.ones(5, bool)
  out = targets.sample_rois(_proposals(), valid, GT_BOXES, GT_CLASSES, GT_VALID,
                            jax.random.PRNGKey(1), num_rois=4, positive_fraction=0.25)
  assert int(jnp.sum(out['roi_classes'] > 0)) == 1
  assert int(jnp.sum(out['roi_valid'])) == 4


def test_sample_rois_without_ground_truth_is_all_background():
  out = targets.sample_rois(_proposals(), jnp.ones(5, bool), GT_BOXES, GT_CLASSES,
                            jnp.zeros(3, bool), jax.random.PRNGKey(0), num_rois=6)
  assert int(jnp.sum(out['roi_classes'])) == 0
  assert int(jnp.sum(out['roi_valid'])) == 5


def test_mask_targets_cut_the_matched_mask_at_the_roi():
  masks = np.zeros((2, 32, 32), np.uint8)
  masks[0, 8:24, 8:16] = 1   # left half of the box [8, 8, 24, 24] is object
  masks[1, 0:4, 0:4] = 1
  rois = jnp.array([[8., 8., 24., 24.], [0., 0., 4., 4.]])
  cut = np.asarray(targets.mask_targets(jnp.asarray(masks), jnp.array([0, 1]), rois,
                                        mask_size=8))
  expected = np.zeros((8, 8), np.float32)
  expected[:, :4] = 1
  np.testing.assert_array_equal(cut[0], expected)
  np.testing.assert_array_equal(cut[1], np.ones((8, 8)))


def test_rpn_targets_label_the_best_anchor_of_each_box():
  anchors = jnp.array([[4., 4., 20., 20.], [30., 30., 50., 40.], [0., 40., 8., 48.],
                       [100., 100., 110., 110.]])
  out = targets.rpn_targets(anchors, GT_BOXES, GT_VALID, GT_BOXES, jnp.zeros(3, bool),
                            jax.random.PRNGKey(0), num_samples=4)
  np.testing.assert_array_equal(out['anchor_labels'][:2], [1, 1])
  np.testing.assert_allclose(out['anchor_deltas'][:2], 0.0, atol=1e-6)
