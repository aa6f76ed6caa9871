"""Classification evaluators for `config.evals` (train/evaluators.py), e.g.

    config.evals = dict(
        shift=dict(type='shift_robustness', shifts=(0, 1, 2, 3, 4)),
        confusion=dict(type='confusion', misclassified=32),
        plain=dict(type='accuracy', model_fields=dict(enabled=False)))

Each predicts on the whole evaluation source with `train.predict` and the task's
`inputs_fn` (uint8 images in, normalised inside the step, as in training). The
results land in the evaluation history as `<name>/<key>`, so a report reads them from
`TrainResult.eval_history[-1]` and a finished run reports without predicting again.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import numpy as np
import tensorflow as tf

from data import pipeline
from tasks.classification import analysis
from train import predict
from train.evaluators import EVALUATORS, EvalContext, Evaluator
from train.state import TrainState


def eval_arrays(context: EvalContext) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
  """A function returning (images `[N, H, W, C]`, labels `[N]`) of the evaluation
  source (after `context.preprocess_fn`, if any), read on the first call only."""
  cache: list[tuple[np.ndarray, np.ndarray]] = []

  def arrays() -> tuple[np.ndarray, np.ndarray]:
    if not cache:
      dataset = context.eval_source.dataset
      if context.preprocess_fn is not None:
        dataset = dataset.map(context.preprocess_fn, num_parallel_calls=tf.data.AUTOTUNE)
      batch = next(pipeline.as_numpy(dataset.batch(context.eval_source.num_examples)))
      cache.append((batch['image'], np.asarray(batch['label'])))
    return cache[0]
  return arrays


def predicted_classes(state: TrainState, images: np.ndarray, context: EvalContext
                      ) -> np.ndarray:
  """The argmax of the model's logits `[N]` on `images` `[N, H, W, C]`."""
  return predict.predict_arrays(state, images, batch_size=context.batch_size,
                                inputs_fn=context.task.inputs_fn).argmax(-1)


def shift_key(shift: int) -> str:
  return f'accuracy_{int(shift)}px'


def shift_accuracies(results: Mapping[str, Any], name: str, shifts: Sequence[int]
                     ) -> dict[int, float]:
  """{shift: accuracy} of the `shift_robustness` evaluator `name` from an evaluation
  history entry (`TrainResult.eval_history[-1]`)."""
  return {int(s): results[f'{name}/{shift_key(s)}'] for s in shifts}


@EVALUATORS.register('shift_robustness')
def shift_robustness(context: EvalContext, shifts: Sequence[int] = (0, 1, 2, 3, 4)
                     ) -> Evaluator:
  """`accuracy_<s>px`: the accuracy when every evaluation image is shifted by s pixels
  (zero fill), the mean over the four directions (analysis.shift_accuracy)."""
  arrays = eval_arrays(context)

  def evaluate(state: TrainState) -> dict[str, float]:
    images, labels = arrays()
    accuracy = analysis.shift_accuracy(lambda x: predicted_classes(state, x, context),
                                       images, labels, shifts)
    return {shift_key(s): value for s, value in accuracy.items()}
  return evaluate


@EVALUATORS.register('confusion')
def confusion(context: EvalContext, misclassified: int = 32, misclassified_stride: int = 1
              ) -> Evaluator:
  """`matrix`: the `[K, K]` class confusion counts of the evaluation source (row = true
  class); `per_class_accuracy` `[K]`; `misclassified`: `[index, true, predicted]` of
  every `misclassified_stride`-th wrong example, the first `misclassified` of them (for
  a grid of images in the report)."""
  arrays = eval_arrays(context)
  num_classes = len(context.eval_source.class_names)

  def evaluate(state: TrainState) -> dict[str, Any]:
    images, labels = arrays()
    predictions = predicted_classes(state, images, context)
    matrix = analysis.class_confusion(labels, predictions, num_classes)
    wrong = np.flatnonzero(predictions != labels)[::misclassified_stride][:misclassified]
    return {'matrix': matrix, 'per_class_accuracy': analysis.per_class_accuracy(matrix),
            'misclassified': [[int(i), int(labels[i]), int(predictions[i])] for i in wrong]}
  return evaluate


@EVALUATORS.register('accuracy')
def accuracy(context: EvalContext, model_fields: Optional[Mapping[str, Any]] = None
             ) -> Evaluator:
  """`accuracy` of the state's model cloned with `model_fields` changed, e.g.
  `dict(enabled=False)`: a models.FlipAveraged classifier without its flip averaging."""
  arrays = eval_arrays(context)
  fields = dict(model_fields or {})
  clones: dict[int, Any] = {}  # one clone per model: the same apply_fn, no recompiling

  def variant(state: TrainState) -> TrainState:
    module = getattr(state.apply_fn, '__self__', None)
    if not isinstance(module, nn.Module):
      raise TypeError(f'accuracy evaluator: the state\'s apply_fn {state.apply_fn!r} is '
                      'not a flax module\'s apply, so model_fields cannot be set.')
    if id(module) not in clones:
      clones[id(module)] = (module, module.clone(**fields).apply)
    return state.replace(apply_fn=clones[id(module)][1])

  def evaluate(state: TrainState) -> dict[str, float]:
    images, labels = arrays()
    predictions = predicted_classes(variant(state) if fields else state, images, context)
    return {'accuracy': float((predictions == labels).mean())}
  return evaluate
