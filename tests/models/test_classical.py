"""The classical baseline: Otsu's threshold and connected components."""
import numpy as np

from models import classical


def test_otsu_splits_two_levels_between_them():
  gray = np.array([[10] * 30 + [200] * 10], np.float32)
  threshold = classical.otsu_threshold(gray)
  assert 10 <= threshold < 200
  assert classical.otsu_threshold(np.full((4, 4), 7.0)) == 7.0


def test_otsu_matches_a_brute_force_search_on_noisy_bimodal_values():
  rng = np.random.default_rng(0)
  values = np.concatenate([rng.normal(40, 8, 3000), rng.normal(150, 20, 1000)])
  threshold = classical.otsu_threshold(values.reshape(40, 100))

  def between(t):
    low, high = values[values <= t], values[values > t]
    return low.size * high.size * (low.mean() - high.mean()) ** 2
  candidates = np.linspace(values.min(), values.max(), 2000)[1:-1]
  best = candidates[np.argmax([between(t) for t in candidates])]
  assert abs(threshold - best) < (values.max() - values.min()) / 100


def _image():
  image = np.full((24, 24, 3), 5, np.uint8)
  image[2:8, 2:10] = 200        # 48 px
  image[12:20, 14:22] = 180     # 64 px, touching the next one diagonally
  image[20:22, 22:24] = 190     # 4 px: joined by 8-connectivity
  image[15, 3] = 220            # 1 px speck
  return image


def test_segment_labels_components_and_drops_small_ones():
  labels = classical.segment(_image(), min_size=3)
  assert labels.dtype == np.int32 and labels.max() == 2
  assert (labels == 1).sum() == 48 and (labels == 2).sum() == 68
  assert labels[15, 3] == 0
  assert classical.segment(_image(), min_size=1).max() == 3
  assert classical.segment(np.zeros((5, 5), np.uint8)).max() == 0


def test_objects_are_boxes_area_scores_and_masks():
  boxes, scores, masks = classical.objects(_image(), min_size=3)
  np.testing.assert_array_equal(boxes, [[2, 2, 10, 8], [14, 12, 24, 22]])
  np.testing.assert_array_equal(scores, [48, 68])
  assert masks.shape == (2, 24, 24) and masks[1, 21, 23] and not masks[0, 21, 23]
