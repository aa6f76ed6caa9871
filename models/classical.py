"""A classical instance segmenter for bright objects on a dark background (no learning).

Otsu's threshold (Otsu 1979) on the grey levels splits the image into foreground and
background; each 8-connected foreground component (scipy.ndimage.label) is one object,
and components smaller than `min_size` pixels are dropped as noise. This is the
baseline a learned model has to beat on fluorescence nuclei: it cannot split touching
objects, and it has no notion of a score, so each object's score is its area in
pixels: larger components rank first, the specks that pass the size filter last (on
the nuclei val split this ranks better than a constant or the mean intensity: segm AP
0.383 vs. 0.353 and 0.356).

Pure NumPy/SciPy on one image at a time: `segment(image) -> labels [H, W]`,
`objects(image) -> (boxes_xyxy, scores, masks)`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def otsu_threshold(gray: np.ndarray, bins: int = 256) -> float:
  """The threshold t maximising the between-class variance of {gray <= t} and {gray > t}.

  gray: float or integer [H, W]. Returns a value between the histogram bin edges; a
  constant image returns its value (everything background).
  """
  values = np.asarray(gray, np.float64).ravel()
  low, high = float(values.min()), float(values.max())
  if low == high:
    return low
  counts, edges = np.histogram(values, bins=bins, range=(low, high))
  centres = (edges[:-1] + edges[1:]) / 2
  weight_low = np.cumsum(counts)                  # pixels in bins <= i
  weight_high = weight_low[-1] - weight_low
  sum_low = np.cumsum(counts * centres)
  mean_low = sum_low / np.maximum(weight_low, 1)
  mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
  between = weight_low * weight_high * (mean_low - mean_high) ** 2
  return float(edges[1:][np.argmax(between)])


def _gray(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 3:
    return image[..., :3].astype(np.float32).mean(axis=-1)
  if image.ndim != 2:
    raise ValueError(f'models/classical.py: image must be [H, W] or [H, W, C], got '
                     f'{image.shape}.')
  return image.astype(np.float32)


def segment(image: np.ndarray, min_size: int = 10) -> np.ndarray:
  """int32 [H, W] instance ids (0 = background) of the bright objects of `image`.

  image: [H, W] or [H, W, C] (channels averaged). Foreground = gray > Otsu threshold;
  8-connected components of at least `min_size` pixels, numbered 1..N in scan order.
  """
  gray = _gray(image)
  foreground = gray > otsu_threshold(gray)
  labels, count = ndimage.label(foreground, structure=np.ones((3, 3), bool))
  if not count:
    return labels.astype(np.int32)
  sizes = np.bincount(labels.ravel(), minlength=count + 1)
  keep = sizes >= min_size
  keep[0] = False
  renumber = np.zeros(count + 1, np.int32)
  renumber[keep] = np.arange(1, int(keep.sum()) + 1)
  return renumber[labels]


def objects(image: np.ndarray, min_size: int = 10
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The objects of `segment` as detections.

  Returns boxes_xyxy float32 [N, 4] (continuous pixel convention: a pixel i covers
  [i, i + 1)), scores float32 [N] (the object's area in pixels) and masks bool [N, H, W].
  """
  labels = segment(image, min_size)
  count = int(labels.max())
  boxes = np.zeros((count, 4), np.float32)
  for i, found in enumerate(ndimage.find_objects(labels, max_label=count)):
    rows, cols = found
    boxes[i] = (cols.start, rows.start, cols.stop, rows.stop)
  ids = np.arange(1, count + 1)
  scores = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.float32)
  masks = labels[None] == ids[:, None, None]
  return boxes, scores, masks
