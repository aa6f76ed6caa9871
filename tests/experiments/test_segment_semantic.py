"""Semantic segmentation experiment: configs and a runlocal smoke run that writes the report."""
import os

import pytest

from experiments import segment_semantic


def test_config_variants():
  assert segment_semantic.get_config().data.source == 'shapes'
  camvid = segment_semantic.get_config('camvid')
  assert camvid.data.source == 'camvid' and camvid.ignore_id == 11
  assert camvid.loss.class_weights == 'median_frequency'
  with pytest.raises(ValueError, match='shapes, camvid or runlocal'):
    segment_semantic.get_config('ade20k')


def test_an_ignore_id_that_is_a_class_is_refused():
  config = segment_semantic.get_config('camvid')
  segment_semantic.check_ignore_id(config, ('a',) * 11)  # void 11 is no class: fine
  config.ignore_id = 0
  with pytest.raises(ValueError, match=r"config.ignore_id=0 is the class id of 'Sky'"):
    segment_semantic.check_ignore_id(config, ('Sky',) + ('a',) * 10)
  config.augment = ''  # nothing is filled without augmentation
  segment_semantic.check_ignore_id(config, ('Sky',) + ('a',) * 10)


def test_runlocal_writes_report_curves_and_overlays(tmp_path):
  config = segment_semantic.get_config('runlocal')
  config.progress_bar = False
  result = segment_semantic.main(config, str(tmp_path))
  assert result.eval_history[-1]['count'] == config.data.eval_examples
  for name in ('report.md', 'learning_curves.png', 'overlays.png'):
    assert os.path.getsize(tmp_path / name) > 0
  report = (tmp_path / 'report.md').read_text()
  assert '| triangle |' in report and 'mIoU' in report
