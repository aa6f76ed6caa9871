"""Mask R-CNN on real COCO 2017 images: the end-to-end proof of the real COCO path.

Default data: ../shared/data/coco128 (100 train2017 + 100 val2017 images, 80
categories with their original ids, compressed-RLE masks and crowd regions). Every
image is loaded through data/coco.py (resized to fit 256 x 256 and padded), the model
trains briefly (the report lists each loss term at the start and the end), and
COCOeval scores the val images in the original image coordinates and category ids.
200 images are far too few to learn 80 categories: this run proves the path, it is
not a score target. With full COCO on disk, point `config.data.data_dir` at it (the
layout `annotations/instances_{train,val}2017.json` + `images/{train,val}2017/`, or
`train2017/`...), and raise `num_epochs` and the image size.

Variants: `coco128` (default), `runlocal` (a few images and steps: a smoke run).
Command:
  python -m experiments.instance_coco --workdir=workdirs/instance_coco
The training loop, report and figures are those of experiments/instance_shapes.py.
"""
from __future__ import annotations

import ml_collections

from experiments import cli, instance_shapes

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'coco128'
  if variant not in ('coco128', 'runlocal'):
    raise ValueError(f'experiments/instance_coco.py:{variant}: expected coco128 or runlocal.')
  config = instance_shapes.get_config('shapes')
  config.data = ml_collections.ConfigDict(dict(
      source='coco_json', data_dir='../shared/data/coco128', image_size=(256, 256),
      max_instances=64, mean=_IMAGENET_MEAN, std=_IMAGENET_STD))
  config.eval_split = 'val'
  config.augment = 'flip_lr|brightness(0.1)|contrast(0.1)'
  # Strides 4..32 for 256-pixel images; a region's level follows detectron2's rule
  # with the canonical 224-pixel box scaled by the ~0.4 resize of COCO's 640 pixels.
  config.model = ml_collections.ConfigDict(dict(
      name='mask_rcnn', stem_stride=2, stage_widths=(32, 64, 128, 256), fpn_width=64,
      anchor_sizes=(32.0, 64.0, 128.0, 256.0), canonical_box_size=96.0, canonical_level=4,
      num_rois=128, num_mask_rois=32, fc_width=256, mask_head_width=64,
      rpn_pre_nms_topk_train=1000, rpn_post_nms_topk_train=256,
      rpn_pre_nms_topk_test=1000, rpn_post_nms_topk_test=200, max_detections=50))
  config.num_epochs = 8
  config.batch_size = 8
  config.eval_batch_size = 10
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 20
  config.log_every_steps = 4
  config.eval_every_epochs = 4
  config.num_shown = 6
  if variant == 'runlocal':
    config.data.image_size = (128, 128)
    config.model.update(stage_widths=(16, 32, 64, 64), fpn_width=32, fc_width=64,
                        mask_head_width=32, num_rois=32, num_mask_rois=8,
                        rpn_pre_nms_topk_train=300, rpn_post_nms_topk_train=64,
                        rpn_pre_nms_topk_test=300, rpn_post_nms_topk_test=64)
    config.num_epochs = 1
    config.batch_size = 20
    config.log_every_steps = 1
    config.optimizer.warmup_steps = 1
    config.num_shown = 3
  return config


def main(config: ml_collections.ConfigDict, workdir: str):
  return instance_shapes.main(config, workdir, title='COCO 2017 images (coco128)')


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/instance_coco')
