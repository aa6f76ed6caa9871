"""The nuclei experiment: config, and a runlocal run on a tiny instance-label folder."""
import json
import os

import pytest

from experiments import instance_nuclei
from tests.tasks.instance.test_classical import write_disks


def test_config_variants():
  config = instance_nuclei.get_config()
  assert config.data.source == 'instance_labels' and config.model.name == 'mask_rcnn'
  # COCOeval counts every detection of the most crowded image (131 nuclei).
  assert config.evals.coco.max_dets[-1] >= config.model.max_detections >= 131
  assert config.data.max_instances >= 131
  assert 'mean' not in config.data and config.preprocess.std > 0  # data: the source's only
  with pytest.raises(ValueError, match='nuclei or runlocal'):
    instance_nuclei.get_config('cells')


@pytest.mark.slow  # about 45 s on 2 busy cores: two compilations
def test_runlocal_reports_both_methods_the_curve_and_the_overlays(tmp_path):
  data = tmp_path / 'data'
  write_disks(data, 'train', [f't{i}' for i in range(8)], seed=0)
  write_disks(data, 'val', ['v0', 'v1'], seed=1)
  config = instance_nuclei.get_config('runlocal')
  config.data.data_dir = str(data)
  config.progress_bar = False
  workdir = tmp_path / 'work'
  result = instance_nuclei.main(config, str(workdir))
  # COCO AP at every evaluation, in the history and in metrics.jsonl.
  assert [entry['epoch'] for entry in result.eval_history] == [1, 2]
  for entry in result.eval_history:
    assert 0.0 <= entry['coco/segm/AP50'] <= 1.0 and 0.0 <= entry['coco/bbox/AP'] <= 1.0
    assert 'maxDets=400' in entry['coco/segm/summary']
  logged = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  assert sum('eval/coco/segm/AP' in record for record in logged) == 2
  report = (workdir / 'report.md').read_text()
  assert '| Mask R-CNN |' in report and '| Otsu + connected components (min 10 px) |' in report
  # Clean separated disks: thresholding finds every one (segm AP50 1, AP 1).
  assert '| Otsu + connected components (min 10 px) | 1.000 | 1.000 |' in report
  assert "{'train': 0, 'val': 0}" in report  # no instance dropped by the static cap
  assert '### AP by epoch' in report and 'maxDets = [1, 100, 400]' in report
  for figure in ('overlays.png', 'ap_by_epoch.png', 'loss_curves.png'):
    assert os.path.getsize(workdir / figure) > 0
