"""Mask R-CNN on real COCO 2017 images: the end-to-end proof of the real COCO path.

Default data: ../shared/data/coco128 (100 train2017 + 100 val2017 images, 80
categories with their original ids, compressed-RLE masks and crowd regions). Every
image is loaded through data/coco.py (resized to fit 256 x 256 and padded), the model
trains briefly (the report lists each loss term at the start and the end), and the
`coco` evaluator (tasks/instance/evaluators.py) scores the val images with COCOeval in
the original image coordinates and category ids at every evaluation.
200 images are far too few to learn 80 categories: this run proves the path, it is
not a score target. With full COCO on disk, point `config.data.data_dir` at it (the
layout `annotations/instances_{train,val}2017.json` + `images/{train,val}2017/`, or
`train2017/`...), and raise `num_epochs` and the image size.

Variants: `coco128` (default) and `runlocal` (a few images and steps: a smoke run);
detectron2's R50-FPN 1x for GPUs is experiments/instance_coco_r50fpn.py.
Command:
  python -m experiments.instance_coco --workdir=workdirs/instance_coco
"""
from __future__ import annotations

import functools
import os

import ml_collections

from experiments import cli, common
from tasks.instance.task import LOSS_TERMS
from train.loop import TrainResult


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'coco128'
  if variant not in ('coco128', 'runlocal'):
    raise ValueError(f'experiments/instance_coco.py:{variant}: expected coco128 or runlocal '
                     '(R50-FPN: experiments/instance_coco_r50fpn.py).')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = dict(source='coco_json', data_dir='../shared/data/coco128',
                     image_size=(256, 256), max_instances=64)
  config.preprocess = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # ImageNet
  config.eval_split = 'val'
  config.augment = 'flip_lr|brightness(0.1)|contrast(0.1)'
  # 'host': tf.data on the CPU cores (the recorded results); 'device' in the jitted step
  # (data/augment_jax.py: other draws; for an accelerator; benchmarks/augment_on.py).
  config.augment_on = 'host'
  # Strides 4..32 for 256-pixel images; a region's level follows detectron2's rule
  # with the canonical 224-pixel box scaled by the ~0.4 resize of COCO's 640 pixels.
  config.model = dict(
      name='mask_rcnn', stem_stride=2, stage_widths=(32, 64, 128, 256), fpn_width=64,
      anchor_sizes=(32.0, 64.0, 128.0, 256.0), canonical_box_size=96.0, canonical_level=4,
      num_rois=128, num_mask_rois=32, fc_width=256, mask_head_width=64,
      rpn_pre_nms_topk_train=1000, rpn_post_nms_topk_train=256,
      rpn_pre_nms_topk_test=1000, rpn_post_nms_topk_test=200, max_detections=50)
  config.loss_weights = {name: 1.0 for name in LOSS_TERMS}
  config.evals = dict(coco=dict(type='coco'))
  config.num_epochs = 8
  config.batch_size = 8
  config.eval_batch_size = 10
  config.optimizer = dict(name='adamw', learning_rate=1e-3, warmup_steps=20,
                          weight_decay=1e-4, grad_clip_norm=10.0)
  config.shuffle_buffer = 10_000
  config.log_every_steps = 4
  config.eval_every_epochs = 4
  config.progress_bar = True
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


def init_fn(config):
  """With `config.init_from` (a torchvision ResNet-50 .pth / .safetensors): a function
  putting those ImageNet weights into the R50-FPN backbone's trunk at state creation."""
  if not config.get('init_from', ''):
    return None
  from models import import_torchvision  # pylint: disable=g-import-not-at-top
  return functools.partial(import_torchvision.load_resnet50, path=config.init_from,
                           at=('backbone', 'trunk'))


def main(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
  clock = common.Clock()
  train_source, eval_source = common.sources(config, config.eval_split)
  result, task = common.train_mask_rcnn(config, workdir, train_source, eval_source,
                                        init_fn(config))
  if common.should_report(result):
    # The images by the data directory's name (coco128, a full COCO 2017, ...).
    name = os.path.basename(os.path.normpath(config.data.get('data_dir') or config.data.source))
    common.report_mask_rcnn(config, workdir, f'{name} ({config.data.source})', result, task,
                            train_source, eval_source, clock)
  return result


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/instance_coco')
