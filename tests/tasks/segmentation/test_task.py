"""Segmentation losses against hand-computed values, exact confusion-matrix metrics,
and a short training run through the one loop that lowers the loss."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from tasks.segmentation import confusion
from tasks.segmentation import task as segmentation


def _batch(mask, valid=None):
  batch = {'mask': jnp.asarray(mask, jnp.int32)}
  if valid is not None:
    batch['valid'] = jnp.asarray(valid)
  return batch


def test_cross_entropy_ignores_the_ignore_label_and_weights_classes():
  # One image of 3 pixels, 2 classes; pixel 2 is ignored (255).
  logits = jnp.array([[[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]]])  # [1, 1, 3, 2]
  mask = [[[0, 1, 255]]]
  ce0 = np.log(1 + np.exp(-2.0))   # -log softmax([2, 0])[0]
  ce1 = np.log(1 + np.exp(-1.0))   # -log softmax([0, 1])[1]
  loss, metrics = segmentation.segmentation_loss(logits, _batch(mask))
  np.testing.assert_allclose(loss, (ce0 + ce1) / 2, rtol=1e-6)
  assert metrics['pixel_accuracy'] == 1.0
  loss, _ = segmentation.segmentation_loss(logits, _batch(mask), class_weights=(1.0, 3.0))
  np.testing.assert_allclose(loss, (1 * ce0 + 3 * ce1) / 4, rtol=1e-6)


def test_binary_cross_entropy_and_dice_by_hand():
  logits = jnp.array([[[[0.0], [2.0], [-1.0], [9.0]]]])  # [1, 1, 4, 1]
  mask = [[[1, 0, 0, 255]]]
  p = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0])))
  y = np.array([1.0, 0.0, 0.0])
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
  dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
  loss, metrics = segmentation.segmentation_loss(logits, _batch(mask), ce_weight=1.0,
                                                 dice_weight=0.5)
  np.testing.assert_allclose(metrics['ce'], bce, rtol=1e-5)
  np.testing.assert_allclose(metrics['dice'], dice, rtol=1e-5)
  np.testing.assert_allclose(loss, bce + 0.5 * dice, rtol=1e-5)
  # Predictions [0, 1, 0] (a zero logit is background): only the last pixel is right.
  np.testing.assert_allclose(metrics['pixel_accuracy'], 1 / 3, rtol=1e-6)


def test_soft_dice_is_zero_for_a_perfect_prediction_and_averages_classes():
  labels = jnp.array([[[0, 1], [2, 2]]])
  targets = segmentation.one_hot(labels, 3)
  counted = jnp.ones(labels.shape, bool)
  assert float(segmentation.soft_dice_loss(targets, targets, counted)) == 0.0
  uniform = jnp.full(targets.shape, 1 / 3)
  per_class = [(2 * n / 3 + 1) / (4 / 3 + n + 1) for n in (1, 1, 2)]
  np.testing.assert_allclose(segmentation.soft_dice_loss(uniform, targets, counted),
                             1 - np.mean(per_class), rtol=1e-6)


def _numpy_miou(labels, predictions, num_classes, counted):
  ious = []
  for c in range(num_classes):
    t, p = (labels == c) & counted, (predictions == c) & counted
    union = (t | p).sum()
    if union:
      ious.append((t & p).sum() / union)
  return np.mean(ious), ious


def test_accumulated_confusion_gives_the_numpy_miou_with_padding_and_ignore():
  rng = np.random.default_rng(0)
  num_classes, batches = 4, []
  all_labels, all_predictions = [], []
  sums = None
  for b in range(3):
    labels = rng.integers(0, num_classes, (5, 6, 7))
    labels[rng.random(labels.shape) < 0.1] = 255
    logits = rng.normal(size=(5, 6, 7, num_classes)).astype(np.float32)
    # The same prediction as the label half the time, so IoUs differ per class.
    logits[..., 0] += 2 * (labels == 0)
    valid = np.array([True] * 5 if b < 2 else [True, True, False, False, False])
    batch = {'mask': jnp.asarray(labels), 'valid': jnp.asarray(valid)}
    batch_sums = jax.jit(segmentation.eval_sums)(jnp.asarray(logits), batch)
    sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
    all_labels.append(labels[valid])
    all_predictions.append(logits.argmax(-1)[valid])
    batches.append(batch)
  labels, predictions = np.concatenate(all_labels), np.concatenate(all_predictions)
  counted = labels < num_classes
  names = ('a', 'b', 'c', 'd')
  metrics = confusion.means_from_sums(jax.device_get(sums), names)
  miou, ious = _numpy_miou(labels, predictions, num_classes, counted)
  np.testing.assert_allclose(metrics['miou'], miou, rtol=1e-6)
  np.testing.assert_allclose([metrics[f'iou/{n}'] for n in names], ious, rtol=1e-6)
  np.testing.assert_allclose(metrics['pixel_accuracy'],
                             (labels == predictions)[counted].mean(), rtol=1e-6)
  assert metrics['count'] == 12 and int(np.asarray(sums['pixels'])) == counted.sum()
  # Not the mean of per-batch mIoUs (which would differ on these batches).
  per_batch = [confusion.metrics_from_confusion(
      jax.device_get(segmentation.eval_sums(jnp.zeros((5, 6, 7, 4)), b)['confusion']),
      names)['miou'] for b in batches]
  assert abs(np.mean(per_batch) - metrics['miou']) > 1e-3


def test_binary_metrics_dice_precision_recall():
  matrix = np.array([[50, 10], [5, 35]])  # rows true, columns predicted
  metrics = confusion.metrics_from_confusion(matrix, ('bg', 'fg'))
  np.testing.assert_allclose(metrics['dice'], 2 * 35 / (2 * 35 + 10 + 5))
  np.testing.assert_allclose(metrics['precision'], 35 / 45)
  np.testing.assert_allclose(metrics['recall'], 35 / 40)
  np.testing.assert_allclose(metrics['iou/fg'], 35 / 50)
  np.testing.assert_allclose(metrics['miou'], (35 / 50 + 50 / 65) / 2)
  logits = jnp.array([[[[1.0], [-1.0]], [[2.0], [-3.0]]]])
  sums = segmentation.eval_sums(logits, _batch([[[1, 1], [0, 255]]], [True]))
  chex.assert_trees_all_equal(np.asarray(sums['confusion']), np.array([[0, 1], [1, 1]]))


def test_absent_class_is_left_out_of_the_mean():
  matrix = np.array([[4, 0, 0], [1, 2, 0], [0, 0, 0]])
  metrics = confusion.metrics_from_confusion(matrix, ('a', 'b', 'c'))
  assert np.isnan(metrics['iou/c'])
  np.testing.assert_allclose(metrics['miou'], (4 / 5 + 2 / 3) / 2)


def test_median_frequency_weights():
  masks = np.array([0] * 6 + [1] * 3 + [2] * 1 + [255] * 5)
  weights = segmentation.median_frequency_weights(masks, 4)
  np.testing.assert_allclose(weights, [0.3 / 0.6, 1.0, 0.3 / 0.1, 0.0])


def test_short_training_run_lowers_the_loss(tmp_path):
  from data import shapes  # pylint: disable=g-import-not-at-top
  from models.unet import UNet  # pylint: disable=g-import-not-at-top
  from train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  train = shapes.shapes_source('train', train_examples=64, image_size=(24, 24))
  val = shapes.shapes_source('val', eval_examples=10, image_size=(24, 24))
  config = {'seed': 0, 'batch_size': 16, 'eval_batch_size': 8, 'num_epochs': 6,
            'optimizer': {'name': 'adamw', 'learning_rate': 1e-2, 'warmup_steps': 2,
                          'weight_decay': 0.0},
            'log_every_steps': 4, 'progress_bar': False}
  result = train_and_evaluate(
      config, str(tmp_path), model=UNet(num_classes=4, depth=2, base_width=8),
      train_source=train, eval_source=val,
      task=segmentation.segmentation_task(shapes.CLASS_NAMES, dice_weight=0.5, mean=0.5,
                                          std=0.25),
      devices=jax.devices()[:1])
  history = result.eval_history
  assert history[-1]['count'] == 10
  assert history[-1]['loss'] < history[0]['loss']
  assert history[-1]['pixel_accuracy'] > 0.7
