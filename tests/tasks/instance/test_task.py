"""The Mask R-CNN loss terms and the in-loop detection metric on hand-computed cases."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from tasks.instance import task as instance_loss


def _outputs(**overrides):
  """Training outputs of one image: 4 anchors, 3 RoIs (K = 3), 2 mask RoIs of 2 x 2."""
  outputs = {
      'rpn_logits': jnp.array([[0.0, 0.0, 0.0, 50.0]]),
      'anchor_labels': jnp.array([[1, 0, 0, -1]]),  # the last anchor is not sampled
      'rpn_deltas': jnp.array([[[1.0, 0, 0, 0], [9.0, 9, 9, 9], [0, 0, 0, 0], [5, 5, 5, 5]]]),
      'anchor_deltas': jnp.zeros((1, 4, 4)),
      'class_logits': jnp.zeros((1, 3, 4)),
      'roi_classes': jnp.array([[2, 0, 1]]),
      'roi_valid': jnp.array([[True, True, False]]),
      'roi_box_deltas': jnp.array([[[0.5, -0.5, 0, 0], [7.0, 7, 7, 7], [3.0, 3, 3, 3]]]),
      'roi_delta_targets': jnp.zeros((1, 3, 4)),
      'mask_logits': jnp.zeros((1, 2, 2, 2)),
      'mask_targets': jnp.ones((1, 2, 2, 2)),
      'mask_valid': jnp.array([[True, False]]),
  }
  outputs.update(overrides)
  return outputs


def test_loss_terms_match_hand_computed_values():
  terms = instance_loss.loss_terms(_outputs())
  # 3 sampled anchors with logit 0: log 2 each; the unsampled one (logit 50) is ignored.
  assert float(terms['rpn_objectness']) == pytest.approx(math.log(2), rel=1e-6)
  # One positive anchor, error 1 in one coordinate: smooth L1 (beta 1/9) = 1 - 1/18;
  # the negative anchor's deltas do not count; divided by 3 sampled anchors.
  assert float(terms['rpn_box']) == pytest.approx((1 - 1 / 18) / 3, rel=1e-6)
  # Uniform logits over K + 1 = 4 classes on the 2 valid RoIs.
  assert float(terms['roi_class']) == pytest.approx(math.log(4), rel=1e-6)
  # L1 of the one valid foreground RoI (1.0), over 2 valid RoIs.
  assert float(terms['roi_box']) == pytest.approx(0.5, rel=1e-6)
  # Logit 0 against target 1 on the one valid mask RoI.
  assert float(terms['mask']) == pytest.approx(math.log(2), rel=1e-6)


def test_weights_scale_the_total():
  outputs = _outputs()
  terms = instance_loss.loss_terms(outputs)
  loss, metrics = instance_loss.instance_loss(outputs, {}, {'mask': 0.0, 'roi_class': 2.0})
  expected = (terms['rpn_objectness'] + terms['rpn_box'] + 2 * terms['roi_class']
              + terms['roi_box'])
  assert float(loss) == pytest.approx(float(expected), rel=1e-6)
  assert float(metrics['foreground_rois']) == 1.0


def test_no_foreground_gives_zero_box_and_mask_terms_not_nan():
  terms = instance_loss.loss_terms(_outputs(
      anchor_labels=jnp.array([[0, 0, -1, -1]]), roi_classes=jnp.zeros((1, 3), jnp.int32),
      mask_valid=jnp.zeros((1, 2), bool)))
  for name in ('rpn_box', 'roi_box', 'mask'):
    assert float(terms[name]) == 0.0


def test_detection_sums_count_same_class_hits_on_valid_images():
  batch = {
      'boxes': jnp.array([[[0., 0., 10., 10.], [20., 20., 30., 30.]],
                          [[0., 0., 10., 10.], [0., 0., 0., 0.]]]),
      'classes': jnp.array([[1, 2], [1, 0]]),
      'instance_valid': jnp.array([[True, True], [True, False]]),
      'valid': jnp.array([True, False]),  # the second image is padding
  }
  outputs = {
      'boxes_xyxy': jnp.array([[[1., 0., 10., 10.], [20., 20., 30., 30.], [50., 50., 60., 60.]],
                               [[0., 0., 10., 10.], [0., 0., 1., 1.], [0., 0., 1., 1.]]]),
      'classes': jnp.array([[1, 3, 1], [1, 1, 1]]),  # the second box has the wrong class
      'scores': jnp.array([[0.9, 0.9, 0.3], [0.9, 0.9, 0.9]]),  # the third is below 0.5
      'valid': jnp.ones((2, 3), bool),
  }
  sums = instance_loss.detection_sums(outputs, batch)
  assert {k: int(v) for k, v in sums.items()} == {
      'found': 1, 'objects': 2, 'correct': 1, 'detections': 2, 'count': 1}
  means = instance_loss.detection_means({k: np.asarray(v) for k, v in sums.items()})
  assert means['recall50'] == 0.5 and means['precision50'] == 0.5
