"""Segmentation report tables: which numbers go in which cell."""
import numpy as np

from report import segmentation


def test_per_class_table_of_a_binary_task_shows_each_class_dice():
  final = {'iou/membrane': 0.5, 'iou/cell': 0.8, 'dice': 0.9, 'dice/membrane': 0.6667}
  header, rows = segmentation.per_class(final, ('membrane', 'cell'), binary=True)
  assert header == ['class', 'IoU', 'Dice']
  assert rows == [['membrane', '0.5000', '0.6667'], ['cell', '0.8000', '0.9000']]
  header, rows = segmentation.per_class(final, ('membrane', 'cell'), binary=False)
  assert header == ['class', 'IoU'] and rows[1] == ['cell', '0.8000']


def test_history_columns_add_dice_for_a_binary_task():
  assert list(segmentation.history_columns(False).values()) == ['miou', 'pixel_accuracy',
                                                                'loss']
  assert segmentation.history_columns(True)['Dice'] == 'dice'


def test_overlay_colours_classes_and_blacks_out_ignore_pixels():
  image = np.full((1, 2, 3), 100, np.uint8)
  out = segmentation.overlay(image, np.array([[1, 255]]), num_classes=2, alpha=1.0)
  np.testing.assert_array_equal(out[0, 0], segmentation.palette(2)[1])
  np.testing.assert_array_equal(out[0, 1], (0, 0, 0))
