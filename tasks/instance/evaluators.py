"""The instance task's evaluator: COCO AP of boxes and masks, run by the loop.

    config.evals = {'coco': dict(type='coco', max_dets=(1, 100, 400))}

At every evaluation `coco` runs the model on every example of the evaluation source
(tasks/instance/evaluation.py: predict_coco), maps the detections back to the original
images and category ids and scores them with pycocotools' COCOeval against the source's
ground truth. Its results land in the evaluation history as `coco/<key>`, so the AP
of each evaluation is in metrics.jsonl (`eval/coco/segm/AP`, ...) and in every
checkpoint; a report reads `result.eval_history[-1]` instead of scoring again:
  <iou type>/<stat>     the 12 COCOeval numbers of each iou type (coco_eval.STAT_NAMES),
                        -1 where the images hold no ground truth of that kind
  <iou type>/per_category_AP   AP per entry of `categories` (-1: no such object)
  <iou type>/summary    COCOeval's printed table
  categories            the category names
  num_results           the number of detections scored
(Lists and text stay in the history only; `coco_results` puts them back together.)
The resize ceiling (the source's own targets scored the same way) does not depend on
the model, so it is no evaluator: a report computes it once (evaluation.resize_ceiling).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from tasks.instance import coco_eval, evaluation
from train.evaluators import EVALUATORS, EvalContext, Evaluator
from train.state import TrainState


@EVALUATORS.register('coco')
def coco_evaluator(context: EvalContext, iou_types: Sequence[str] = ('bbox', 'segm'),
                   max_dets: Sequence[int] | None = None) -> Evaluator:
  """COCOeval of the model on `context.eval_source` (module docstring).

  iou_types: 'bbox' and/or 'segm'; 'segm' is left out where the source has no masks
  (`metadata['has_masks']` False, e.g. TFDS coco/2017). max_dets: COCOeval's
  `params.maxDets` (None: [1, 10, 100]); AP counts up to the last, so raise it where
  an image holds more than 100 objects.
  """
  source = context.eval_source
  if not source.metadata.get('has_masks', True):
    iou_types = tuple(t for t in iou_types if t != 'segm')
  max_dets = None if max_dets is None else tuple(int(m) for m in max_dets)

  def evaluate(state: TrainState) -> dict[str, Any]:
    results, image_ids = evaluation.predict_coco(state, source, batch_size=context.batch_size,
                                                 inputs_fn=context.task.inputs_fn)
    scored = evaluation.score_results(results, source, image_ids, iou_types, max_dets)
    flat: dict[str, Any] = {'num_results': scored['num_results']}
    for iou_type, stats in scored['metrics'].items():
      flat.update({f'{iou_type}/{stat}': value for stat, value in stats.items()})
      flat[f'{iou_type}/summary'] = scored['summaries'][iou_type]
      per_category = scored['per_category_ap'][iou_type]
      flat['categories'] = list(per_category)
      flat[f'{iou_type}/per_category_AP'] = list(per_category.values())
    return flat
  return evaluate


def coco_results(entry: Mapping[str, Any], name: str = 'coco') -> dict[str, Any]:
  """Evaluator `name`'s results in one evaluation-history entry, as score_results gives
  them: {'metrics': {iou type: {stat: value}}, 'summaries': {iou type: text},
  'per_category_ap': {iou type: {category: AP}}, 'num_results'}."""
  iou_types = [t for t in ('bbox', 'segm') if f'{name}/{t}/AP' in entry]
  if not iou_types:
    raise KeyError(f'tasks/instance/evaluators.py: no {name}/<iou type>/AP in the evaluation '
                   f'history entry (keys {sorted(entry)}); expected config.evals.{name} = '
                   "dict(type='coco').")
  categories = entry[f'{name}/categories']
  return {
      'metrics': {t: {s: entry[f'{name}/{t}/{s}'] for s in coco_eval.STAT_NAMES}
                  for t in iou_types},
      'summaries': {t: entry[f'{name}/{t}/summary'] for t in iou_types},
      'per_category_ap': {t: dict(zip(categories, entry[f'{name}/{t}/per_category_AP']))
                          for t in iou_types},
      'num_results': entry[f'{name}/num_results']}
