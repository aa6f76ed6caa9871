"""The classical baseline as COCO results: separated disks are found exactly, the real
nuclei val split scores what the issue measured, and masks land where the source puts
the image."""
import os

import numpy as np
import pytest
from PIL import Image

from data.sources import build_source
from tasks.instance import classical, evaluation
from tests.conftest import shared_data_path


def write_disks(root, split, names, seed):
  """Bright separated disks on a dark 48 x 48 background, with their 16-bit id map
  (data/instance_labels.py's layout)."""
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


def test_separated_disks_are_found_exactly(tmp_path):
  write_disks(tmp_path, 'val', ['v0', 'v1', 'v2'], seed=1)
  source = build_source({'source': 'instance_labels', 'data_dir': str(tmp_path),
                         'image_size': (32, 32), 'max_instances': 8}, 'val')
  results, masks = classical.classical_results(source, min_size=10)
  assert sorted(masks) == [1, 2, 3]
  assert len(results) == sum(len(m) for m in masks.values()) == source.metadata['num_instances']
  metrics = evaluation.score_results(results, source, sorted(masks))['metrics']
  # Thresholding finds every disk whole: the ground truth and its coordinates line up.
  assert metrics['segm']['AP'] == pytest.approx(1.0)
  assert metrics['bbox']['AP'] == pytest.approx(1.0)


def test_masks_go_to_the_model_input_like_the_image():
  masks = np.zeros((1, 6, 8), bool)
  masks[0, 2:4, 4:8] = True  # the lower-right quarter block of a 6 x 8 image
  placed = classical.at_model_input(masks, (6, 8), (3, 4), (5, 5))
  expected = np.zeros((1, 5, 5), bool)
  expected[0, 1, 2:4] = True  # halved, at the top left; the padding stays empty
  np.testing.assert_array_equal(placed, expected)


def test_classical_baseline_on_the_real_val_split():
  val = build_source({'source': 'instance_labels', 'image_size': (256, 256),
                      'data_dir': shared_data_path('nuclei_dsb2018'), 'max_instances': 160},
                     'val')
  results, masks = classical.classical_results(val, min_size=10)
  assert sorted(masks) == list(range(1, 87))
  metrics = evaluation.score_results(results, val, sorted(masks),
                                     max_dets=(1, 100, 400))['metrics']
  # The plain-script figures: segm AP 0.379, AP50 0.622; bbox AP 0.401, 0.618.
  assert metrics['segm']['AP'] == pytest.approx(0.38, abs=0.02)
  assert metrics['segm']['AP50'] == pytest.approx(0.62, abs=0.02)
  assert metrics['bbox']['AP'] == pytest.approx(0.40, abs=0.02)
