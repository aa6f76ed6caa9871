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

import json
import os

import matplotlib
import matplotlib.patches
import ml_collections
import numpy as np
from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose

from data import seg_folder
from experiments import cli


_DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                             'shared', 'data')
CAMVID_VOID = 11
_ID_STRIDE = 1000  # classes = instance index * _ID_STRIDE + category id, while plotting
CAMVID_CLASSES = ('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol',
                  'Fence', 'Car', 'Pedestrian', 'Bicyclist')


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
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = os.path.join(data_dir, 'camvid_240x180')
  paths = [os.path.join(root, 'train', name), os.path.join(root, 'trainannot', name)]
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f'experiments/show_augmentations.py: {path} is missing; point '
                              '--config.data_dir at the folder holding camvid_240x180/.')
  image = np.asarray(Image.open(paths[0]).convert('RGB'))
  return {'image': image, 'mask': seg_folder.read_mask(paths[1]).astype(np.uint8)}


def read_coco(data_dir: str, name: str) -> tuple[dict[str, np.ndarray], dict[int, str]]:
  """image [H, W, 3] uint8, instance_masks [N, H, W] uint8, boxes_xyxy [N, 4] float32,
  classes [N] int32 (COCO category ids), is_crowd [N] bool; and id -> category name."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
  root = os.path.join(data_dir, 'coco128')
  path = os.path.join(root, 'annotations', 'instances_train2017.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'experiments/show_augmentations.py: {path} is missing; point '
                            '--config.data_dir at the folder holding coco128/.')
  with open(path) as f:
    coco = json.load(f)
  per_image: dict[int, list] = {}
  for ann in coco['annotations']:
    per_image.setdefault(ann['image_id'], []).append(ann)
  images = sorted(coco['images'], key=lambda im: im['file_name'])
  if name:
    info = next((im for im in images if im['file_name'] == name), None)
    if info is None:
      raise FileNotFoundError(f'experiments/show_augmentations.py: no image {name!r} in {path}.')
  else:
    info = next(im for im in images if 4 <= len(per_image.get(im['id'], [])) <= 10)
  anns = per_image.get(info['id'], [])
  image = np.asarray(Image.open(os.path.join(root, 'images', 'train2017',
                                             info['file_name'])).convert('RGB'))
  masks = [_decode(mask_utils, a['segmentation'], info['height'], info['width']) for a in anns]
  boxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
  example = {
      'image': image,
      'instance_masks': np.stack(masks).astype(np.uint8).reshape(-1, *image.shape[:2]),
      'boxes': np.asarray(boxes, np.float32).reshape(-1, 4),
      'classes': np.asarray([a['category_id'] for a in anns], np.int32),
      'is_crowd': np.asarray([a['iscrowd'] for a in anns], bool)}
  return example, {c['id']: c['name'] for c in coco['categories']}


def _decode(mask_utils, segmentation, height: int, width: int) -> np.ndarray:
  """COCO segmentation (compressed RLE, uncompressed RLE or polygons) -> [H, W] uint8."""
  if isinstance(segmentation, list):  # polygons: one RLE per part, merged
    return mask_utils.decode(mask_utils.merge(
        mask_utils.frPyObjects(segmentation, height, width)))
  if isinstance(segmentation['counts'], list):
    segmentation = mask_utils.frPyObjects(segmentation, height, width)
  elif isinstance(segmentation['counts'], str):
    segmentation = {**segmentation, 'counts': segmentation['counts'].encode('ascii')}
  return mask_utils.decode(segmentation)


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


def _palette(n: int) -> np.ndarray:
  return matplotlib.colormaps.get_cmap('tab20')(np.arange(n) % 20)[:, :3]


def plot_camvid(examples: list[dict[str, np.ndarray]], spec: str, path: str) -> None:
  colours = _palette(len(CAMVID_CLASSES))
  fig = Figure(figsize=(2.6 * len(examples), 4.4))
  axes = fig.subplots(2, len(examples), squeeze=False)
  for col, ex in enumerate(examples):
    image = ex['image'].astype(np.float32) / 255
    mask = ex['mask']
    overlay = image.copy()
    labelled = mask < len(CAMVID_CLASSES)
    overlay[labelled] = 0.45 * image[labelled] + 0.55 * colours[mask[labelled]]
    for row, shown in enumerate((image, overlay)):
      axes[row, col].imshow(shown)
      axes[row, col].set_axis_off()
    axes[0, col].set_title('original' if col == 0 else f'draw {col}', fontsize=9)
  fig.suptitle(f'CamVid: {spec}', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_coco(examples: list[dict[str, np.ndarray]], names: dict[int, str], spec: str,
              path: str) -> None:
  cols = min(4, len(examples))
  rows = -(-len(examples) // cols)
  fig = Figure(figsize=(3.6 * cols, 3.6 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for index, (ax, ex) in enumerate(zip(axes.flat, examples)):
    image = ex['image'].astype(np.float32) / 255
    # One colour per instance, found again through the id carried in `classes`.
    colours = _palette(len(examples[0]['classes']))[ex['classes'] // _ID_STRIDE]
    for k, inst in enumerate(ex['instance_masks']):
      on = inst.astype(bool)
      image[on] = 0.5 * image[on] + 0.5 * colours[k]
    ax.imshow(image)
    for k, (x0, y0, x1, y1) in enumerate(ex['boxes']):
      colour = colours[k]
      # Box edges lie on pixel boundaries; imshow puts pixel centres at integers.
      ax.add_patch(matplotlib.patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                 edgecolor=colour, linewidth=1.2,
                                 linestyle='--' if ex['is_crowd'][k] else '-'))
      ax.text(x0, y0, names.get(int(ex['classes'][k] % _ID_STRIDE), '?'), color='white', fontsize=6,
              va='bottom', bbox=dict(facecolor=colour, alpha=0.7, pad=0.5, linewidth=0))
    ax.set_title('original' if index == 0 else f'draw {index} ({len(ex["boxes"])} objects)',
                 fontsize=9)
  fig.suptitle(f'COCO: {spec}', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
  os.makedirs(workdir, exist_ok=True)
  camvid = draws(read_camvid(config.data_dir, config.camvid_image), config.camvid_policy,
                 config.seed, config.num_draws, fill={'mask': CAMVID_VOID})
  coco, names = read_coco(config.data_dir, config.coco_image)
  coco['classes'] = coco['classes'] + _ID_STRIDE * np.arange(len(coco['classes']), dtype=np.int32)
  coco_draws = draws(coco, config.coco_policy, config.seed, config.num_draws,
                     min_box_visibility=config.min_box_visibility)
  paths = {'camvid': os.path.join(workdir, 'camvid_augmentations.png'),
           'coco': os.path.join(workdir, 'coco_augmentations.png')}
  plot_camvid(camvid, config.camvid_policy, paths['camvid'])
  plot_coco(coco_draws, names, config.coco_policy, paths['coco'])
  for path in paths.values():
    print(path)
  return paths


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/show_augmentations')
