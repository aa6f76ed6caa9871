"""Class confusion, per-class accuracy and image shifts against hand-computed values."""
import numpy as np

from tasks.classification import analysis


def test_class_confusion_counts_true_rows_and_predicted_columns():
  labels = np.array([0, 0, 1, 2, 2, 2])
  predictions = np.array([0, 1, 1, 2, 0, 2])
  matrix = analysis.class_confusion(labels, predictions, 4)
  np.testing.assert_array_equal(matrix, [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0],
                                         [0, 0, 0, 0]])
  # Class 3 has no examples: accuracy 0, not a division by zero.
  np.testing.assert_array_equal(analysis.per_class_accuracy(matrix), [0.5, 1.0, 2 / 3, 0.0])


def test_shift_images_moves_a_known_pixel_and_fills_with_zeros():
  image = np.zeros((1, 4, 5, 1), np.uint8)
  image[0, 1, 1, 0] = 7
  image[0, 3, 4, 0] = 9  # leaves the frame when shifted down or right
  down_right = analysis.shift_images(image, 1, 2)
  expected = np.zeros_like(image)
  expected[0, 2, 3, 0] = 7
  np.testing.assert_array_equal(down_right, expected)
  up_left = analysis.shift_images(image, -1, -1)
  expected = np.zeros_like(image)
  expected[0, 0, 0, 0] = 7
  expected[0, 2, 3, 0] = 9
  np.testing.assert_array_equal(up_left, expected)
  np.testing.assert_array_equal(analysis.shift_images(image, 0, 0), image)


def column_images():
  """Two 8 x 8 images with one bright pixel at row 2: column 3 (class 0, left half)
  and column 4 (class 1, right half)."""
  images = np.zeros((2, 8, 8, 1), np.uint8)
  images[0, 2, 3, 0] = images[1, 2, 4, 0] = 255
  return images, np.array([0, 1])


def predict_half(images):
  """Class 1 if the brightest pixel's column is in the right half; an empty image has its
  argmax at column 0: class 0."""
  columns = images.reshape(len(images), -1).argmax(-1) % images.shape[2]
  return (columns >= images.shape[2] // 2).astype(np.int64)


def test_shift_accuracy_is_the_mean_of_four_directions():
  images, labels = column_images()
  # s=1: right 1/2 (col 3 -> 4 wrong), left 1/2 (col 4 -> 3 wrong), down and up 2/2.
  # s=4: right 0/2 (col 3 -> 7; col 4 leaves: empty -> 0), left 1/2 (col 3 leaves:
  # empty -> 0 right; col 4 -> 0 wrong), down 2/2 (row 6), up 1/2 (row 2 leaves: empty).
  assert analysis.shift_accuracy(predict_half, images, labels, (0, 1, 4)) == {
      0: 1.0, 1: 0.75, 4: 0.5}
