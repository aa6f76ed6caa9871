"""Shows an augmentation policy's draws so a person can check that every key moves together.

Writes into the workdir:
  camvid_augmentations.png  a CamVid scene and `num_draws` draws: top row the image,
                            bottom row the same image with its semantic mask overlaid
                            (void/ignore pixels uncoloured).
  coco_augmentations.png    a COCO image and its draws with the instance masks
                            overlaid and the boxes drawn, labelled with class names.
If image and labels drift apart, the overlay visibly slides off the objects.

  python -m experiments.show_augmentations --workdir=workdirs/show_augmentations
  python -m experiments.show_augmentations --config.num_draws=3 \
      --config.camvid_policy='flip_lr|rotate(30)'
Data (read-only, see ../shared/data/README.md): camvid_240x180/{train,trainannot}/*.png
and coco128/annotations/instances_train2017.json + images/train2017/*.jpg.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np

from data import coco, seg_folder
from experiments import cli
from report import augmentations as report

_DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                             'shared', 'data')


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.data_dir = _DEFAULT_DATA
  config.seed = 0
  config.num_draws = 7
  config.camvid_image = '0016E5_01470.png'  # a file in camvid_240x180/train
  config.camvid_policy = ('flip_lr|rotate(20)|scale_crop(0.3, 1.0)|brightness(0.2)|'
                          'contrast(0.2)|saturation(0.3)|hue(0.05)')
  config.coco_image = ''  # a file in coco128/images/train2017; '' = first with 4-10 objects
  config.coco_policy = ('flip_lr|rotate(20)|scale_crop(0.3, 1.0)|brightness(0.2)|'
                        'contrast(0.2)|cutout(0.2)')
  config.min_box_visibility = 0.25
  return config


def read_camvid(data_dir: str, name: str) -> dict[str, np.ndarray]:
  """image [H, W, 3] uint8 and mask [H, W] uint8 (0-10, 11 = void) of one training scene."""
  root = os.path.join(data_dir, 'camvid_240x180')
  paths = (os.path.join(root, 'train', name), os.path.join(root, 'trainannot', name))
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f'experiments/show_augmentations.py: {path} is missing; point '
                              '--config.data_dir at the folder holding camvid_240x180/.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  decode = seg_folder.pair_decoder(seg_folder.check_pairs([paths], 3),
                                   len(seg_folder.CAMVID_CLASSES), seg_folder.CAMVID_IGNORE)
  example = decode({'image': tf.constant(paths[0]), 'mask': tf.constant(paths[1])})
  return {'image': example['image'].numpy(), 'mask': example['mask'].numpy().astype(np.uint8)}


def read_coco(data_dir: str, name: str) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
  """One coco128 training image at its own size (data/coco.py): image [H, W, 3] uint8,
  instance_masks [N, H, W] uint8, boxes [N, 4] boxes_xyxy, classes [N] (labels 1..K),
  is_crowd [N]; and the class names (label k: name k). `name` '' picks the first image
  by file name with 4 to 10 annotations."""
  root = os.path.join(data_dir, 'coco128')
  json_path, image_dir = coco.resolve_paths('train', root)
  images, per_image, categories = coco.load_annotations(json_path, image_dir)
  images = sorted(images, key=lambda im: im['file_name'])
  if name:
    info = next((im for im in images if im['file_name'] == name), None)
    if info is None:
      raise FileNotFoundError(f'experiments/show_augmentations.py: no image {name!r} in '
                              f'{json_path}.')
  else:
    info = next(im for im in images if 4 <= len(per_image[im['id']]) <= 10)
  annotations = per_image[info['id']]
  example = coco.load_example(info, annotations, image_dir,
                              {c['id']: k + 1 for k, c in enumerate(categories)},
                              (info['height'], info['width']), max(1, len(annotations)))
  kept = example['instance_valid']
  return ({k: example[k][kept] if k != 'image' else example[k]
           for k in ('image', 'instance_masks', 'boxes', 'classes', 'is_crowd')},
          ('background', *(c['name'] for c in categories)))


def draws(example: dict[str, np.ndarray], spec: str, seed: int, num: int,
          **policy_kwargs) -> list[dict[str, np.ndarray]]:
  """The example itself, then `num` draws of the policy with example seeds 0..num-1."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from data import augment, pipeline  # pylint: disable=g-import-not-at-top
  policy = tf.function(augment.build_policy(spec, **policy_kwargs))
  features = {k: tf.constant(v) for k, v in example.items()}
  out = [example]
  for index in range(num):
    result = policy(features, pipeline.example_seed(seed, 0, tf.constant(index)))
    out.append({k: v.numpy() for k, v in result.items()})
  return out


def main(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
  os.makedirs(workdir, exist_ok=True)
  camvid = draws(read_camvid(config.data_dir, config.camvid_image), config.camvid_policy,
                 config.seed, config.num_draws, fill={'mask': seg_folder.CAMVID_IGNORE})
  example, class_names = read_coco(config.data_dir, config.coco_image)
  # Each instance's index rides along in its class id, so a draw that drops instances
  # still shows every other one in its own colour.
  example['classes'] = example['classes'] + report.ID_STRIDE * np.arange(
      len(example['classes']), dtype=np.int32)
  coco_draws = draws(example, config.coco_policy, config.seed, config.num_draws,
                     min_box_visibility=config.min_box_visibility)
  paths = {'camvid': os.path.join(workdir, 'camvid_augmentations.png'),
           'coco': os.path.join(workdir, 'coco_augmentations.png')}
  report.camvid_draws(paths['camvid'], camvid, len(seg_folder.CAMVID_CLASSES),
                      config.camvid_policy)
  report.coco_draws(paths['coco'], coco_draws, class_names, config.coco_policy)
  for path in paths.values():
    print(path)
  return paths


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/show_augmentations')
