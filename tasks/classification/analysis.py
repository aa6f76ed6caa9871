"""Post-training analysis of a classifier: predictions, confusion matrix, shift robustness."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from train import steps
from train.state import TrainState


# One jitted function for the module: a new jit wrapper per call would recompile on every
# call (shift_accuracy makes 17 calls per model).
_predict = jax.jit(steps.predict_step)


def predict_logits(state: TrainState, images: np.ndarray, batch_size: int = 1000,
                   normalize_fn: Callable[[np.ndarray], np.ndarray] | None = None
                   ) -> np.ndarray:
  """Logits `[N, K]` for `images` `[N, H, W, C]`; the last batch is padded, then cut."""
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:  # pad so every call has the same shape: one compilation
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
    if normalize_fn is not None:
      chunk = normalize_fn(chunk)
    outputs.append(np.asarray(_predict(state, {'image': chunk}))[:n])
  return np.concatenate(outputs)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int
                     ) -> np.ndarray:
  """`[K, K]` counts: row = true class, column = predicted class."""
  return np.bincount(labels * num_classes + predictions,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


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


def shift_accuracy(state: TrainState, images: np.ndarray, labels: np.ndarray,
                   shifts: tuple[int, ...], normalize_fn: Callable | None = None,
                   batch_size: int = 1000) -> dict[int, float]:
  """Accuracy when every test image is shifted by s pixels, averaged over the four
  directions (right, left, down, up); s = 0 is the plain test accuracy."""
  result = {}
  for s in shifts:
    directions = [(0, 0)] if s == 0 else [(0, s), (0, -s), (s, 0), (-s, 0)]
    accs = []
    for dy, dx in directions:
      logits = predict_logits(state, shift_images(images, dy, dx), batch_size, normalize_fn)
      accs.append(float((logits.argmax(-1) == labels).mean()))
    result[s] = float(np.mean(accs))
  return result


def first_conv_maps(state: TrainState, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(first conv kernel `[kh, kw, C_in, F]`, its feature maps on `image` `[H, W, F]`)."""
  variables = {'params': state.params, **state.model_state}
  _, inter = state.apply_fn(
      variables, image[None], train=False,
      capture_intermediates=lambda mdl, method: isinstance(mdl, nn.Conv))
  convs = inter['intermediates']
  first = sorted(convs, key=lambda name: int(name.split('_')[-1]))[0]
  kernel = np.asarray(state.params[first]['kernel'])
  maps = np.asarray(jnp.asarray(convs[first]['__call__'][0])[0])
  return kernel, maps
