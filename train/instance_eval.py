"""COCO evaluation of a trained Mask R-CNN on a whole evaluation source.

Runs the model's inference on every example once (padded batches with `valid` flags,
one compilation), turns the detections into COCO results in the original images'
coordinates and category ids (train/coco_eval.py), and scores them with pycocotools'
COCOeval against the source's own annotation file. `resize_ceiling` scores the source's
own targets the same way: the best a model can reach at that image size.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import numpy as np

from data import pipeline
from data.sources import Source
from train import coco_eval, steps
from train.state import TrainState

DETECTION_KEYS = ('boxes_xyxy', 'scores', 'classes', 'valid', 'masks')
IMAGE_KEYS = ('image_id', 'resized_size', 'original_size')


@functools.partial(jax.jit, static_argnames=('inputs_fn',))
def _predict(state: TrainState, batch: Mapping[str, Any], inputs_fn) -> dict:
  return steps.predict_step(state, batch, inputs_fn=inputs_fn)


def predict_source(state: TrainState, source: Source, *, batch_size: int,
                   inputs_fn: steps.InputsFn, max_examples: int | None = None
                   ) -> dict[str, np.ndarray]:
  """Detections and image keys for the first `max_examples` (all) examples, stacked [N, ...]."""
  dataset = source.dataset if max_examples is None else source.dataset.take(max_examples)
  collected: dict[str, list[np.ndarray]] = {}
  for batch in pipeline.as_numpy(pipeline.eval_batches(dataset, batch_size=batch_size)):
    outputs = jax.device_get(_predict(state, batch, inputs_fn))
    keep = np.asarray(batch['valid'])
    for key in DETECTION_KEYS:
      collected.setdefault(key, []).append(np.asarray(outputs[key])[keep])
    for key in IMAGE_KEYS:
      collected.setdefault(key, []).append(np.asarray(batch[key])[keep])
  return {k: np.concatenate(v) for k, v in collected.items()}


def coco_metrics(predictions: Mapping[str, np.ndarray], source: Source,
                 iou_types=('bbox', 'segm')) -> dict[str, Any]:
  """COCOeval of `predict_source`'s output against the source's annotation file."""
  results = coco_eval.detections_to_coco(
      {k: predictions[k] for k in DETECTION_KEYS}, predictions['image_id'],
      predictions['resized_size'], predictions['original_size'],
      source.metadata['category_ids'])
  report = coco_eval.evaluate_report(source.metadata['annotation_file'], results,
                                     iou_types=iou_types,
                                     image_ids=[int(i) for i in predictions['image_id']])
  return {'metrics': report.metrics, 'summaries': report.summaries,
          'per_category_ap': report.per_category_ap, 'num_results': len(results)}


def resize_ceiling(source: Source, iou_types=('bbox', 'segm'), batch_size: int = 8
                   ) -> dict[str, dict[str, float]]:
  """COCOeval of the source's own targets, resized by the source and mapped back.

  Box AP is 1 when the mapping is exact; mask AP is below 1 where the resize loses
  shape (thin parts, small objects): no model scores more than this at the source's
  image size with masks predicted at the model input. Runs over every example in
  batches of `batch_size`, so memory stays bounded.
  """
  results, image_ids = [], []
  for batch in source.dataset.batch(batch_size).as_numpy_iterator():
    results += coco_eval.ground_truth_results(batch, source.metadata['category_ids'])
    image_ids += [int(i) for i in batch['image_id']]
  return coco_eval.evaluate(source.metadata['annotation_file'], results, iou_types=iou_types,
                            image_ids=image_ids)
