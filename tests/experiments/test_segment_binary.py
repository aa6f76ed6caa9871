"""Binary segmentation experiment: configs and a runlocal smoke run with Dice in the report."""
import os

import pytest

from experiments import segment_binary


def test_config_variants():
  shapes = segment_binary.get_config()
  assert shapes.model.num_classes == 1 and shapes.data.target == 'binary'
  isbi = segment_binary.get_config('isbi')
  assert isbi.data.source == 'isbi_membrane' and isbi.data.train_slices == 24
  assert 'std' not in isbi.data and isbi.preprocess.std == 0.17
  with pytest.raises(ValueError, match='shapes, isbi or runlocal'):
    segment_binary.get_config('drive')


def test_runlocal_reports_dice(tmp_path):
  config = segment_binary.get_config('runlocal')
  config.progress_bar = False
  result = segment_binary.main(config, str(tmp_path))
  final = result.final_eval
  assert 0.0 <= final['dice'] <= 1.0 and 'precision' in final
  assert os.path.getsize(tmp_path / 'overlays.png') > 0
  report = (tmp_path / 'report.md').read_text()
  assert 'Dice (F1) fg' in report
  assert f'| shape | {final["iou/shape"]:.4f} | {final["dice"]:.4f} |' in report
