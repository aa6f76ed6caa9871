"""What a segmentation run decides before and after training: class weights from a
config string, the ignore-id check, and predicted masks for figures."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from data import pipeline
from data.sources import Source
from tasks.segmentation import task as segmentation
from train import predict, steps
from train.state import TrainState


def class_weights(spec: str, train_source: Source) -> Optional[tuple[float, ...]]:
  """The cross-entropy class weights of `config.loss.class_weights`: '' none,
  'median_frequency' from every mask of `train_source` (read once), or one
  comma-separated number per class."""
  if not spec:
    return None
  class_names = train_source.class_names
  if spec == 'median_frequency':
    masks = next(pipeline.as_numpy(train_source.dataset.map(lambda example: example['mask'])
                                   .batch(train_source.num_examples)))
    return tuple(segmentation.median_frequency_weights(masks, len(class_names)))
  weights = tuple(float(w) for w in str(spec).split(','))
  if len(weights) != len(class_names):
    raise ValueError(f'config.loss.class_weights={spec!r}: {len(weights)} weights for '
                     f'{len(class_names)} classes {class_names}.')
  return weights


def check_ignore_id(ignore_id: int, augment: str, class_names: Sequence[str]) -> None:
  """Geometric augmentation fills uncovered mask pixels with `ignore_id`: a class id
  there would train and score those pixels as that class, silently."""
  if augment and 0 <= ignore_id < len(class_names):
    raise ValueError(
        f'config.ignore_id={ignore_id} is the class id of {class_names[ignore_id]!r}: the '
        'mask pixels that augmentation uncovers would count as that class; use a value '
        f'outside 0..{len(class_names) - 1} (e.g. 255).')


def predict_masks(state: TrainState, images: np.ndarray, *, batch_size: int,
                  inputs_fn: steps.InputsFn = steps.image_inputs) -> np.ndarray:
  """int32 class ids `[N, H, W]` for uint8 `images` `[N, H, W, C]`, fed to the model by
  the task's `inputs_fn` exactly as in training."""
  logits = predict.predict_arrays(state, images, batch_size=batch_size, inputs_fn=inputs_fn)
  return np.asarray(segmentation.predictions(logits))
