"""The sync picture is written from the real CamVid and COCO files."""
import ml_collections

from experiments import show_augmentations
from tests.conftest import shared_data_path


def test_writes_both_grids(tmp_path):
  config = show_augmentations.get_config()
  config.data_dir = shared_data_path()
  config.num_draws = 2
  show_augmentations.main(ml_collections.ConfigDict(config), str(tmp_path))
  for name in ('camvid_augmentations.png', 'coco_augmentations.png'):
    assert (tmp_path / name).stat().st_size > 10_000, name
