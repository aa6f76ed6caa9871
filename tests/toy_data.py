"""A tiny learnable classification Source shared by the loop, mesh and multi-process tests."""
from typing import Optional

import numpy as np
import tensorflow as tf

from data.sources import Source


def band_source(n: int, seed: int, num_classes: int = 3,
                bad_label_at: Optional[int] = None) -> Source:
  """`n` 12x12 uint8 images; class k brightens row band k, learnable in a few steps.

  `bad_label_at` plants an out-of-range label at that index (for error tests).
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.integers(0, 60, (n, 12, 12, 1)).astype(np.uint8)
  for k in range(3):
    images[labels == k, 4 * k:4 * k + 4] += 150
  if bad_label_at is not None:
    labels[bad_label_at] = num_classes + 2
  ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
  return Source(ds, n, ('a', 'b', 'c')[:num_classes], (12, 12, 1))
