"""Detection post-processing and mask pasting of models/mask_rcnn/postprocess.py."""
import chex
import jax.numpy as jnp
import numpy as np

from models.mask_rcnn import postprocess


def _logits(class_probs):
  return jnp.log(jnp.asarray(class_probs, jnp.float32))


def test_detect_keeps_the_best_box_per_object_and_class():
  rois = jnp.array([[10., 10., 30., 30.], [11., 10., 31., 30.], [40., 40., 60., 60.],
                    [10., 10., 30., 30.]])
  # RoIs 0 and 1 overlap (same class 1): NMS keeps the better one. RoI 3 sits on
  # RoI 0 but says class 2: per-class NMS keeps it. RoI 2 is background.
  logits = _logits([[0.05, 0.9, 0.05], [0.2, 0.7, 0.1], [0.98, 0.01, 0.01],
                    [0.3, 0.1, 0.6]])
  deltas = jnp.zeros((4, 2, 4))
  out = postprocess.detect(logits, deltas, rois, jnp.ones(4, bool), (64, 64),
                           score_threshold=0.3, nms_threshold=0.5, max_detections=5)
  chex.assert_shape(out['boxes_xyxy'], (5, 4))
  assert int(out['valid'].sum()) == 2
  np.testing.assert_array_equal(out['classes'][:2], [1, 2])
  np.testing.assert_allclose(out['scores'][:2], [0.9, 0.6], rtol=1e-5)
  np.testing.assert_allclose(out['boxes_xyxy'][:2], rois[jnp.array([0, 3])], atol=1e-4)
  assert float(jnp.abs(out['boxes_xyxy'][2:]).sum()) == 0.0


def test_detect_ignores_invalid_rois():
  rois = jnp.array([[10., 10., 30., 30.]])
  out = postprocess.detect(_logits([[0.01, 0.99]]), jnp.zeros((1, 1, 4)), rois,
                           jnp.array([False]), (64, 64), max_detections=3)
  assert not out['valid'].any()


def test_paste_masks_fills_exactly_the_box():
  boxes = jnp.array([[8., 4., 24., 12.], [0., 0., 64., 64.]])
  probs = jnp.stack([jnp.ones((28, 28)), jnp.zeros((28, 28)).at[:, 14:].set(1.0)])
  pasted = np.asarray(postprocess.paste_masks(probs, boxes, (32, 64)))
  chex.assert_shape(pasted, (2, 32, 64))
  expected = np.zeros((32, 64))
  expected[4:12, 8:24] = 1
  np.testing.assert_allclose(pasted[0], expected)
  # Right half of the mask -> right half of the image (interpolated at the seam).
  assert (pasted[1][:, 33:] > 0.99).all() and (pasted[1][:, :31] < 0.01).all()
