"""Instance segmentation experiments: configs, and runlocal runs through the COCO path."""
import json
import os
import re

import pytest

from experiments import instance_coco, instance_shapes
from tests.conftest import shared_data_path


def test_config_variants():
  config = instance_shapes.get_config()
  assert config.data.source == 'coco_json' and config.model.name == 'mask_rcnn'
  assert config.synthetic.seed != config.synthetic.val_seed  # held-out images
  # config.data is the source's arguments only; the writer's and normalisation's apart.
  assert set(config.data) == {'source', 'data_dir', 'image_size', 'max_instances'}
  coco = instance_coco.get_config()
  assert set(coco.data) == set(config.data) and 'synthetic' not in coco
  assert coco.evals.coco.type == 'coco'
  with pytest.raises(ValueError, match='shapes or runlocal'):
    instance_shapes.get_config('cityscapes')
  with pytest.raises(ValueError, match='expected coco128 or runlocal'):
    instance_coco.get_config('lvis')


@pytest.mark.slow  # one to four minutes on 2 busy cores: two compilations, two COCOevals
def test_runlocal_writes_coco_data_and_a_coco_report(tmp_path):
  config = instance_shapes.get_config('runlocal')
  config.progress_bar = False
  result = instance_shapes.main(config, str(tmp_path))
  # The synthetic data went through the COCO JSON + PNG path.
  annotations = json.loads((tmp_path / 'coco_shapes/annotations/instances_val.json')
                           .read_text())
  assert len(annotations['images']) == config.synthetic.val_examples
  # COCO AP at both evaluations (every epoch), beside the in-loop check.
  assert [entry['epoch'] for entry in result.eval_history] == [1, 2]
  assert 'recall50' in result.final_eval
  for entry in result.eval_history:
    for iou_type in ('bbox', 'segm'):
      assert 0.0 <= entry[f'coco/{iou_type}/AP50'] <= 1.0
  report = (tmp_path / 'report.md').read_text()
  assert report.startswith('# Instance segmentation: Mask R-CNN on synthetic shapes')
  assert '| bbox |' in report and '| segm |' in report and 'COCOeval segm' in report
  # The shapes are read at the size they were drawn: the resize ceiling is exact.
  assert ('Ceiling at (64, 64): the annotations themselves, resized by the source and mapped '
          'back, score box AP 1.000 and mask AP 1.000') in report
  for figure in ('detections.png', 'loss_curves.png'):
    assert os.path.getsize(tmp_path / figure) > 0


@pytest.mark.slow
def test_coco128_runlocal_loads_every_image_and_scores_with_original_ids(tmp_path):
  config = instance_coco.get_config('runlocal')
  config.data.data_dir = shared_data_path('coco128')
  config.progress_bar = False
  result = instance_coco.main(config, str(tmp_path))
  last = result.final_eval
  assert 'coco/bbox/AP' in last and 'coco/segm/AP' in last
  # Per-category AP is keyed by the annotation file's names: all 80 COCO categories.
  assert len(last['coco/categories']) == 80 and 'person' in last['coco/categories']
  assert len(last['coco/segm/per_category_AP']) == 80
  report = (tmp_path / 'report.md').read_text()
  assert report.startswith('# Instance segmentation: Mask R-CNN on coco128 (coco_json)')
  assert '100 training and 100 `val` images' in report
  # coco128 at 128 px: boxes map back exactly, masks lose detail in the resize.
  box, mask = (float(v) for v in re.search(r'score box AP ([\d.]+) and mask AP ([\d.]+)',
                                           report).groups())
  assert box == 1.0 and 0.5 < mask < 0.9
