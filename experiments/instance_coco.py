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

Variants: `coco128` (default), `runlocal` (a few images and steps: a smoke run), and
`coco_r50fpn`: detectron2's R50-FPN 1x for GPUs (below).
Command:
  python -m experiments.instance_coco --workdir=workdirs/instance_coco

coco_r50fpn, shaped like detectron2's mask_rcnn_R_50_FPN_1x: ResNet-50 + FPN (P2-P6)
from torchvision's ImageNet weights (`--config.init_from=resnet50.pth` or a
.safetensors; frozen BatchNorm, stem and layer1 frozen), anchors 32-512 over P2-P6,
256 anchors and 512 RoIs per image (25% foreground), box head 2 x fc 1024, mask head
4 x conv 256, SGD momentum 0.9, lr 0.02, weight decay 1e-4, 1000 warm-up steps, lr / 10
at 2/3 and 8/9 of the run, batch 16, horizontal flips. Images: one static 1024 x 1024
(long side resized to 1024, padded): detectron2 resizes the short side to 800 (max
1333) and pads each batch to a multiple of 32, a shape per batch that jit would
recompile for; a square 1024 holds landscape and portrait images alike at about the
same pixel count (COCO's 640 x 480 becomes 1024 x 768 against detectron2's 1067 x 800),
as the TPU Mask R-CNN and detectron2's large-scale-jitter baselines do. The loop
counts whole epochs: 12 epochs of train2017's 117,266 images = 87,948 steps at batch 16
(detectron2's 90k steps are 12.3 epochs).
  python -m experiments.instance_coco --config=experiments/instance_coco.py:coco_r50fpn \
    --config.data.data_dir=<COCO 2017> --config.init_from=<resnet50 .pth/.safetensors> \
    --workdir=workdirs/coco_r50fpn
"""
from __future__ import annotations

import functools
import os

import ml_collections

from experiments import cli, common
from models import build_model
from report import instance as instance_report
from tasks.instance import evaluation
from tasks.instance.task import LOSS_TERMS, instance_task
from train.loop import TrainResult, train_and_evaluate
from train.metric_writer import read_metrics


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'coco128'
  if variant not in ('coco128', 'runlocal', 'coco_r50fpn'):
    raise ValueError(f'experiments/instance_coco.py:{variant}: expected coco128, runlocal or '
                     'coco_r50fpn.')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = dict(source='coco_json', data_dir='../shared/data/coco128',
                     image_size=(256, 256), max_instances=64)
  config.preprocess = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # ImageNet
  config.eval_split = 'val'
  config.augment = 'flip_lr|brightness(0.1)|contrast(0.1)'
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
  if variant == 'coco_r50fpn':
    r50fpn(config)
  return config


def r50fpn(config: ml_collections.ConfigDict) -> None:
  """detectron2's R50-FPN 1x (see the module docstring), in place."""
  config.init_from = ''  # a torchvision ResNet-50 .pth / .safetensors (ImageNet weights)
  config.data.update(image_size=(1024, 1024), max_instances=100)
  config.augment = 'flip_lr'
  config.model = ml_collections.ConfigDict(dict(
      name='mask_rcnn', backbone='resnet50_fpn', fpn_width=256, freeze_at=2,
      backbone_norm='frozen', anchor_sizes=(32.0, 64.0, 128.0, 256.0, 512.0),
      aspect_ratios=(0.5, 1.0, 2.0), canonical_box_size=224.0, canonical_level=4,
      rpn_batch_size=256, rpn_pre_nms_topk_train=2000, rpn_post_nms_topk_train=1000,
      rpn_pre_nms_topk_test=1000, rpn_post_nms_topk_test=1000, rpn_nms_threshold=0.7,
      num_rois=512, roi_positive_fraction=0.25, num_mask_rois=128, box_pool_size=7,
      mask_pool_size=14, sampling_ratio=2, fc_width=1024, mask_head_width=256,
      mask_head_convs=4, score_threshold=0.05, detection_nms_threshold=0.5,
      max_detections=100))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', learning_rate=0.02, momentum=0.9, weight_decay=1e-4, warmup_steps=1000,
      warmup_init_fraction=0.001, decay_at=(2 / 3, 8 / 9), decay_factor=0.1,
      grad_clip_norm=0.0))
  config.num_epochs = 12
  config.batch_size = 16
  config.eval_batch_size = 8
  # Decoded 1024 x 1024 examples with 100 full-size instance masks are ~100 MB each.
  config.shuffle_buffer = 64
  config.log_every_steps = 20
  config.eval_every_epochs = 4
  config.num_shown = 6


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
  model = build_model({**config.model.to_dict(),
                       'num_classes': len(train_source.class_names) - 1})
  weights = config.loss_weights.to_dict()
  has_masks = train_source.metadata.get('has_masks', True)
  if not has_masks:  # TFDS coco/2017: boxes, no masks (data/coco_tfds.py): a detector only
    weights['mask'] = 0.0
  task = instance_task(**common.normalization(config), loss_weights=weights)
  result = train_and_evaluate(config, workdir, model=model, train_source=train_source,
                              eval_source=eval_source, task=task, init_fn=init_fn(config),
                              augment_fn=common.augment_fn(config, drop_mode='invalidate'))
  if not common.should_report(result):
    return result
  shown = evaluation.predict_source(result.state, eval_source, inputs_fn=task.inputs_fn,
                                    batch_size=config.eval_batch_size,
                                    max_examples=config.num_shown)
  # The images by the data directory's name (coco128, a full COCO 2017, ...).
  name = os.path.basename(os.path.normpath(config.data.get('data_dir') or config.data.source))
  title = f'{name} ({config.data.source})'
  sections = instance_report.mask_rcnn_sections(
      workdir, title, config, result, read_metrics(workdir), shown,
      evaluation.resize_ceiling(eval_source) if has_masks else None, train_source,
      eval_source, clock)
  common.write_report(workdir, f'Instance segmentation: Mask R-CNN on {title}', sections)
  return result


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/instance_coco')
