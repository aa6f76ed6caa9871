"""The learning-rate schedules of train/optimizer.py."""
import numpy as np
import pytest

from train.optimizer import build_optimizer, step_schedule


def test_step_schedule_is_detectron2s_1x():
  schedule = step_schedule(0.02, 90_000, 1000, (2 / 3, 8 / 9), 0.1, warmup_init_fraction=0.001)
  lr = lambda step: float(schedule(step))
  assert lr(0) == pytest.approx(0.02 * 0.001, rel=1e-4)
  assert lr(500) == pytest.approx(0.02 * (0.001 + 0.999 * 0.5), rel=1e-4)
  assert lr(1000) == pytest.approx(0.02, rel=1e-4)
  assert lr(59_999) == pytest.approx(0.02, rel=1e-4)
  assert lr(60_001) == pytest.approx(0.002, rel=1e-4)
  assert lr(80_001) == pytest.approx(0.0002, rel=1e-4)
  assert lr(89_999) == pytest.approx(0.0002, rel=1e-4)


def test_build_optimizer_picks_the_step_schedule_from_decay_at():
  _, schedule = build_optimizer({'name': 'sgd', 'learning_rate': 0.1, 'decay_at': (0.5,)}, 100)
  np.testing.assert_allclose([schedule(10), schedule(60)], [0.1, 0.01], rtol=1e-6)
  _, cosine = build_optimizer({'name': 'sgd', 'learning_rate': 0.1}, 100)
  assert float(cosine(99)) < 0.001
