"""The numbers and maps behind a classifier's evaluators and figures, on the host:
the class confusion matrix, accuracy on translated images, first-layer feature maps."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from train import steps
from train.state import TrainState


def class_confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int
                    ) -> np.ndarray:
  """int64 `[K, K]` counts of examples (labels and predictions `[N]`): row = true class,
  column = predicted class. (tasks/segmentation/confusion.py counts pixels, on device.)"""
  return np.bincount(labels * num_classes + predictions,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
  """float64 `[K]`: the fraction of each true class predicted right (0 for a class with
  no examples)."""
  return np.diag(matrix) / np.maximum(matrix.sum(1), 1)


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Translates `[N, H, W, C]` images by (dy, dx) pixels, filling with zeros (background)."""
  out = np.zeros_like(images)
  h, w = images.shape[1:3]
  src_y = slice(max(0, -dy), h - max(0, dy))
  dst_y = slice(max(0, dy), h - max(0, -dy))
  src_x = slice(max(0, -dx), w - max(0, dx))
  dst_x = slice(max(0, dx), w - max(0, -dx))
  out[:, dst_y, dst_x] = images[:, src_y, src_x]
  return out


def shift_accuracy(predict_fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                   labels: np.ndarray, shifts: Sequence[int]) -> dict[int, float]:
  """{s: accuracy} when every image `[N, H, W, C]` is shifted by s pixels, the mean over
  the four directions (right, left, down, up); s = 0 is the plain accuracy.
  `predict_fn` maps images to predicted classes `[N]`."""
  result = {}
  for s in shifts:
    directions = [(0, 0)] if s == 0 else [(0, s), (0, -s), (s, 0), (-s, 0)]
    accs = [float((predict_fn(shift_images(images, dy, dx)) == labels).mean())
            for dy, dx in directions]
    result[int(s)] = float(np.mean(accs))
  return result


def first_conv_maps(state: TrainState, image: np.ndarray,
                    inputs_fn: steps.InputsFn = steps.image_inputs
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(first conv kernel `[kh, kw, C_in, F]`, its feature maps `[H, W, F]` on `image`
  `[H, W, C]` as the step receives it, e.g. uint8 with the task's normalising
  `inputs_fn`)."""
  variables = {'params': state.params, **state.model_state}
  _, inter = state.apply_fn(
      variables, *inputs_fn({'image': image[None]}), train=False,
      capture_intermediates=lambda mdl, method: isinstance(mdl, nn.Conv))
  convs = inter['intermediates']
  first = sorted(convs, key=lambda name: int(name.split('_')[-1]))[0]
  kernel = np.asarray(state.params[first]['kernel'])
  maps = np.asarray(jnp.asarray(convs[first]['__call__'][0])[0])
  return kernel, maps
