"""The nuclei experiment: config, and a runlocal run on a tiny instance-label folder."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from experiments import instance_nuclei
from tests.conftest import shared_data_path


def _write_disks(root, split, names, seed):
  """Bright separated disks on a dark 48 x 48 background, with their 16-bit id map."""
  rng = np.random.default_rng(seed)
  os.makedirs(root / 'images', exist_ok=True)
  os.makedirs(root / 'labels', exist_ok=True)
  yy, xx = np.mgrid[:48, :48]
  for name in names:
    label = np.zeros((48, 48), np.uint16)
    for k, (cy, cx) in enumerate([(10, 10), (12, 34), (34, 14), (36, 36)][:rng.integers(2, 5)]):
      radius = rng.uniform(3.5, 6.5)
      label[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k + 1
    image = np.where(label > 0, 180, 12).astype(np.uint8)
    Image.fromarray(image).convert('RGBA').save(root / 'images' / f'{name}.png')
    Image.fromarray(label).save(root / 'labels' / f'{name}.png')
  (root / f'{split}.txt').write_text('\n'.join(names) + '\n')


def test_config_variants():
  config = instance_nuclei.get_config()
  assert config.data.source == 'instance_labels' and config.model.name == 'mask_rcnn'
  assert config.max_dets[-1] >= config.model.max_detections >= 131  # most nuclei an image
  assert config.data.max_instances >= 131
  with pytest.raises(ValueError, match='nuclei or runlocal'):
    instance_nuclei.get_config('cells')


@pytest.mark.slow  # about 45 s on 2 busy cores: two compilations
def test_runlocal_reports_both_methods_the_curve_and_the_overlays(tmp_path):
  data = tmp_path / 'data'
  _write_disks(data, 'train', [f't{i}' for i in range(8)], seed=0)
  _write_disks(data, 'val', ['v0', 'v1'], seed=1)
  config = instance_nuclei.get_config('runlocal')
  config.data.data_dir = str(data)
  config.progress_bar = False
  workdir = tmp_path / 'work'
  instance_nuclei.main(config, str(workdir))
  saved = json.loads((workdir / 'coco_metrics.json').read_text())
  assert saved['max_dets'] == [1, 100, 400]
  assert saved['dropped_instances'] == {'train': 0, 'val': 0}
  assert [p['epoch'] for p in saved['curve']] == [1, 2]
  # Clean separated disks: thresholding finds every one, so the classical row is
  # near perfect, which also proves the ground truth and its coordinates line up.
  assert saved['classical']['segm']['AP50'] == pytest.approx(1.0)
  assert saved['classical']['bbox']['AP'] > 0.6
  for iou_type in ('bbox', 'segm'):
    assert 0.0 <= saved['mask_rcnn'][iou_type]['AP50'] <= 1.0
  report = (workdir / 'report.md').read_text()
  assert '| Mask R-CNN |' in report and '| Otsu + connected components' in report
  assert '### AP by epoch' in report and 'maxDets = [1, 100, 400]' in report
  for figure in ('overlays.png', 'ap_by_epoch.png', 'loss_curves.png'):
    assert os.path.getsize(workdir / figure) > 0


def test_classical_baseline_on_the_real_val_split():
  config = instance_nuclei.get_config()
  config.data.data_dir = shared_data_path('nuclei_dsb2018')
  _, val = instance_nuclei.sources(config)
  results, masks = instance_nuclei.classical_results(config, val)
  assert sorted(masks) == list(range(1, 87))
  from tasks.instance import evaluation as instance_eval  # pylint: disable=g-import-not-at-top
  metrics = instance_eval.score_results(results, val, sorted(masks),
                                        max_dets=config.max_dets)['metrics']
  # The plain-script figures: segm AP 0.379, AP50 0.622; bbox AP 0.401, 0.618.
  assert metrics['segm']['AP'] == pytest.approx(0.38, abs=0.02)
  assert metrics['segm']['AP50'] == pytest.approx(0.62, abs=0.02)
  assert metrics['bbox']['AP'] == pytest.approx(0.40, abs=0.02)
