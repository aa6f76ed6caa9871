"""COCO evaluation of a trained Mask R-CNN on a whole evaluation source.

Runs the model's inference on every example once (padded batches with `valid` flags,
one compilation), turns the detections into COCO results in the original images'
coordinates and category ids (tasks/instance/coco_eval.py), and scores them with pycocotools'
COCOeval against the source's ground truth: `metadata['ground_truth']` (an in-memory
COCO, e.g. data/instance_labels.py) or else its annotation file. `resize_ceiling` scores
the source's own targets the same way: the best a model can reach at that image size.
`predict_coco` converts batch by batch and keeps only the COCO results: for many
detections per image (400 pasted 256 x 256 masks are 105 MB an image) stacking every
image's masks as `predict_source` does (for the few images a figure draws) would not
fit in memory. The `coco` evaluator (tasks/instance/evaluators.py) runs these in the
loop; inference is train/predict.py's, one jit for every caller.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from data import pipeline
from data.sources import Source
from tasks.instance import coco_eval
from train import predict, steps
from train.state import TrainState

DETECTION_KEYS = ('boxes_xyxy', 'scores', 'classes', 'valid', 'masks')
IMAGE_KEYS = ('image_id', 'resized_size', 'original_size')


def predict_source(state: TrainState, source: Source, *, batch_size: int,
                   inputs_fn: steps.InputsFn, max_examples: int | None = None
                   ) -> dict[str, np.ndarray]:
  """Detections and image keys for the first `max_examples` (all) examples, stacked [N, ...]."""
  dataset = source.dataset if max_examples is None else source.dataset.take(max_examples)
  collected: dict[str, list[np.ndarray]] = {}
  for outputs, batch in predict.predict_batches(state, dataset, batch_size=batch_size,
                                                inputs_fn=inputs_fn):
    for key in DETECTION_KEYS:
      collected.setdefault(key, []).append(outputs[key])
    for key in IMAGE_KEYS:
      collected.setdefault(key, []).append(batch[key])
  return {k: np.concatenate(v) for k, v in collected.items()}


def _to_coco(predictions: Mapping[str, np.ndarray], source: Source) -> list[dict]:
  return coco_eval.detections_to_coco(
      {k: predictions[k] for k in DETECTION_KEYS if k in predictions},
      predictions['image_id'], predictions['resized_size'], predictions['original_size'],
      source.metadata['category_ids'])


def predict_coco(state: TrainState, source: Source, *, batch_size: int,
                 inputs_fn: steps.InputsFn) -> tuple[list[dict], list[int]]:
  """(COCO results, image ids) of the whole source, converted batch by batch (module
  docstring)."""
  results, image_ids = [], []
  for outputs, batch in predict.predict_batches(state, source.dataset, batch_size=batch_size,
                                                inputs_fn=inputs_fn):
    predictions = {**{k: outputs[k] for k in DETECTION_KEYS},
                   **{k: batch[k] for k in IMAGE_KEYS}}
    results += _to_coco(predictions, source)
    image_ids += [int(i) for i in predictions['image_id']]
  return results, image_ids


def score_results(results: list[dict], source: Source, image_ids: Sequence[int],
                  iou_types: Sequence[str] = ('bbox', 'segm'),
                  max_dets: Sequence[int] | None = None) -> dict[str, Any]:
  """COCOeval of COCO `results` on `image_ids` against the source's ground truth.

  max_dets: COCOeval's `params.maxDets` (default [1, 10, 100]); AP and AP50 use the
  last entry, so raise it where an image holds more than 100 objects.
  """
  report = coco_eval.evaluate_report(_ground_truth(source), results, iou_types=iou_types,
                                     image_ids=image_ids, max_dets=max_dets)
  return {'metrics': report.metrics, 'summaries': report.summaries,
          'per_category_ap': report.per_category_ap, 'num_results': len(results)}


def _ground_truth(source: Source):
  """The source's in-memory COCO ground truth, or else its annotation file."""
  return (source.metadata['ground_truth'] if 'ground_truth' in source.metadata
          else source.metadata['annotation_file'])


def resize_ceiling(source: Source, iou_types=('bbox', 'segm'), batch_size: int = 8
                   ) -> dict[str, dict[str, float]]:
  """COCOeval of the source's own targets, resized by the source and mapped back.

  Box AP is 1 when the mapping is exact; mask AP is below 1 where the resize loses
  shape (thin parts, small objects): no model scores more than this at the source's
  image size with masks predicted at the model input. Runs over every example in
  batches of `batch_size`, so memory stays bounded.
  """
  results, image_ids = [], []
  for batch in pipeline.as_numpy(source.dataset.batch(batch_size)):
    results += coco_eval.ground_truth_results(batch, source.metadata['category_ids'])
    image_ids += [int(i) for i in batch['image_id']]
  return coco_eval.evaluate(_ground_truth(source), results, iou_types=iou_types,
                            image_ids=image_ids)
