"""The `coco` evaluator: a model that answers with the ground truth scores what the
source's resize allows (box AP 1), a wrong one less; its flat results come back whole."""
import jax
import numpy as np
import optax
import pytest

from data import shapes
from data.sources import build_source
from tasks.instance import evaluation, evaluators
from tasks.instance.task import instance_task
from tests.tasks.instance.test_coco_eval import _odd_source, _write_odd_set
from train.evaluators import EvalContext, build_evaluators, run_evaluators
from train.state import TrainState


def _answers_with_the_ground_truth(shift: float = 0.0):
  """A model's apply_fn that returns its targets (instance_inputs passes them) as
  detections, boxes moved right by `shift` pixels."""
  def apply_fn(variables, images, targets, train):
    del variables, images, train
    valid = targets['instance_valid'] & ~targets['is_crowd'].astype(bool)
    return {'boxes_xyxy': targets['boxes'] + np.array([shift, 0, shift, 0], np.float32),
            'scores': valid.astype(np.float32), 'classes': targets['classes'],
            'valid': valid, 'masks': targets['instance_masks'].astype(np.float32)}
  return TrainState.create(apply_fn=apply_fn, params={}, tx=optax.identity(), model_state={},
                           rng=jax.random.PRNGKey(0))


@pytest.fixture(scope='module')
def odd_set(tmp_path_factory):
  return _write_odd_set(tmp_path_factory.mktemp('odd'))


def _evaluate(source, state, **fields):
  context = EvalContext(eval_source=source, batch_size=3, task=instance_task(0.5, 0.25),
                        workdir='unused')
  built = build_evaluators({'coco': dict(type='coco', **fields)}, context)
  return run_evaluators(built, state)


def test_ground_truth_as_detections_scores_the_resize_ceiling(odd_set):
  source = _odd_source(odd_set, (96, 160))
  results = _evaluate(source, _answers_with_the_ground_truth())
  ceiling = evaluation.resize_ceiling(source)
  for iou_type in ('bbox', 'segm'):
    for stat in ('AP', 'AP50', 'AP75'):
      assert results[f'coco/{iou_type}/{stat}'] == ceiling[iou_type][stat], (iou_type, stat)
  assert results['coco/bbox/AP'] == pytest.approx(1.0, abs=1e-9)
  assert 0.2 < results['coco/segm/AP'] < 1.0  # masks lose detail in the resize
  assert results['coco/categories'] == ['three', 'eight']  # the annotation file's names
  assert results['coco/num_results'] == 4 * source.num_examples  # crowd regions left out


def test_shapes_at_their_own_size_score_ap_one_and_moved_boxes_less(tmp_path):
  shapes.write_coco(str(tmp_path), 6, seed=3, split='val', image_size=(48, 48),
                    max_instances=3, size_range=(0.15, 0.3))
  source = build_source({'source': 'coco_json', 'data_dir': str(tmp_path),
                         'image_size': (48, 48), 'max_instances': 3}, 'val')
  exact = _evaluate(source, _answers_with_the_ground_truth())
  for iou_type in ('bbox', 'segm'):
    assert exact[f'coco/{iou_type}/AP'] == pytest.approx(1.0, abs=1e-9)
    assert min(exact[f'coco/{iou_type}/per_category_AP']) == pytest.approx(1.0, abs=1e-9)
  moved = _evaluate(source, _answers_with_the_ground_truth(shift=4.0), iou_types=('bbox',))
  assert 0.0 <= moved['coco/bbox/AP'] < 0.9
  assert 'coco/segm/AP' not in moved


def test_history_entry_gives_back_score_results(odd_set):
  source = _odd_source(odd_set, (64, 64))
  state = _answers_with_the_ground_truth()
  flat = _evaluate(source, state, max_dets=(1, 10, 400))
  results, image_ids = evaluation.predict_coco(state, source, batch_size=3,
                                               inputs_fn=instance_task().inputs_fn)
  direct = evaluation.score_results(results, source, image_ids, max_dets=(1, 10, 400))
  assert evaluators.coco_results(flat) == direct
  assert 'maxDets=400' in flat['coco/segm/summary']
  with pytest.raises(KeyError, match=r"config.evals.val = dict\(type='coco'\)"):
    evaluators.coco_results(flat, name='val')
