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


def test_reads_a_coco_image_at_its_own_size_with_its_instances():
  example, class_names = show_augmentations.read_coco(shared_data_path(), '')
  height, width = example['image'].shape[:2]
  count = len(example['classes'])
  assert 4 <= count <= 10 and class_names[0] == 'background'
  assert example['instance_masks'].shape == (count, height, width)
  assert example['instance_masks'].reshape(count, -1).max(1).min() == 1  # none empty
  boxes = example['boxes']
  assert (boxes[:, :2] < boxes[:, 2:]).all() and (boxes[:, 2:] <= (width, height)).all()
  assert all(0 < c < len(class_names) for c in example['classes'])
