"""Semantic segmentation experiment: configs and a runlocal smoke run that writes the report."""
import os

import pytest

from data.sources import build_source
from experiments import segment_semantic


def test_config_variants():
  assert segment_semantic.get_config().data.source == 'shapes'
  camvid = segment_semantic.get_config('camvid')
  assert camvid.data.source == 'camvid' and camvid.ignore_id == 11
  assert camvid.loss.class_weights == 'median_frequency'
  assert camvid.preprocess.mean == (0.39, 0.41, 0.42)
  with pytest.raises(ValueError, match='shapes, camvid or runlocal'):
    segment_semantic.get_config('ade20k')


def test_config_data_holds_only_the_sources_arguments():
  config = segment_semantic.get_config('runlocal')
  assert 'mean' not in config.data and 'std' not in config.data
  assert build_source(config.data.to_dict(), 'val').num_examples == config.data.eval_examples


def test_runlocal_writes_report_curves_and_overlays(tmp_path):
  config = segment_semantic.get_config('runlocal')
  config.progress_bar = False
  result = segment_semantic.main(config, str(tmp_path))
  assert result.eval_history[-1]['count'] == config.data.eval_examples
  for name in ('report.md', 'learning_curves.png', 'overlays.png'):
    assert os.path.getsize(tmp_path / name) > 0
  report = (tmp_path / 'report.md').read_text()
  assert '| triangle |' in report and 'mIoU' in report
  final = result.final_eval
  assert f'| circle | {final["iou/circle"]:.4f} |' in report
  assert f'| {final["miou"]:.4f} | {final["pixel_accuracy"]:.4f} |' in report
