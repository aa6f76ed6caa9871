"""Instance segmentation experiments: configs, and runlocal runs through the COCO path."""
import json
import os

import pytest

from experiments import instance_coco, instance_shapes
from tests.conftest import shared_data_path


def test_config_variants():
  config = instance_shapes.get_config()
  assert config.data.source == 'coco_json' and config.model.name == 'mask_rcnn'
  assert config.data.synthetic.seed != config.data.synthetic.val_seed  # held-out images
  with pytest.raises(ValueError, match='shapes or runlocal'):
    instance_shapes.get_config('cityscapes')
  with pytest.raises(ValueError, match='coco128, runlocal or coco_r50fpn'):
    instance_coco.get_config('lvis')


def test_runlocal_writes_coco_data_and_a_coco_report(tmp_path):
  config = instance_shapes.get_config('runlocal')
  config.progress_bar = False
  result = instance_shapes.main(config, str(tmp_path))
  # The synthetic data went through the COCO JSON + PNG path.
  annotations = json.loads((tmp_path / 'coco_shapes/annotations/instances_val.json')
                           .read_text())
  assert len(annotations['images']) == config.data.synthetic.val_examples
  assert 'recall50' in result.final_eval
  metrics = json.loads((tmp_path / 'coco_metrics.json').read_text())['metrics']
  for iou_type in ('bbox', 'segm'):
    assert 0.0 <= metrics[iou_type]['AP50'] <= 1.0
  report = (tmp_path / 'report.md').read_text()
  assert '| bbox |' in report and '| segm |' in report and 'COCOeval segm' in report
  # The shapes are read at the size they were drawn: the resize ceiling is exact.
  assert 'Ceiling at (64, 64): the annotations themselves' in report
  ceiling = json.loads((tmp_path / 'coco_metrics.json').read_text())['ceiling']
  assert ceiling['bbox']['AP'] == 1.0 and ceiling['segm']['AP'] == 1.0
  for figure in ('detections.png', 'loss_curves.png'):
    assert os.path.getsize(tmp_path / figure) > 0


@pytest.mark.slow
def test_coco128_runlocal_loads_every_image_and_scores_with_original_ids(tmp_path):
  config = instance_coco.get_config('runlocal')
  config.data.data_dir = shared_data_path('coco128')
  config.progress_bar = False
  instance_coco.main(config, str(tmp_path))
  saved = json.loads((tmp_path / 'coco_metrics.json').read_text())
  assert set(saved['metrics']) == {'bbox', 'segm'}
  # Per-category AP is keyed by the annotation file's names: all 80 COCO categories.
  assert len(saved['per_category_ap']['bbox']) == 80
  assert 'person' in saved['per_category_ap']['segm']
  report = (tmp_path / 'report.md').read_text()
  assert '100 training and 100 `val` images' in report
  # coco128 at 128 px: boxes map back exactly, masks lose detail in the resize.
  assert saved['ceiling']['bbox']['AP'] == pytest.approx(1.0, abs=1e-9)
  assert 0.5 < saved['ceiling']['segm']['AP'] < 0.9
