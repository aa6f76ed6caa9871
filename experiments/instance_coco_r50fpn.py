"""Mask R-CNN shaped like detectron2's mask_rcnn_R_50_FPN_1x, for GPUs: the config of
experiments/instance_coco.py's run (its `main`), sized for full COCO 2017.

ResNet-50 + FPN (P2-P6) from torchvision's ImageNet weights (`--config.init_from=resnet50.pth` or a
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
Command:
  python -m experiments.instance_coco_r50fpn \
    --config.data.data_dir=<COCO 2017> --config.init_from=<resnet50 .pth/.safetensors> \
    --workdir=workdirs/coco_r50fpn
"""
from __future__ import annotations

import ml_collections

from experiments import cli, instance_coco


def get_config() -> ml_collections.ConfigDict:
  config = instance_coco.get_config()
  config.init_from = ''  # a torchvision ResNet-50 .pth / .safetensors (ImageNet weights)
  config.data.update(image_size=(1024, 1024), max_instances=100)
  config.augment = 'flip_lr'
  # GPU-shaped: host instance-mask warping ran at ~9 images per CPU-second here
  # (benchmarks/augment_on.py), far below what a GPU step takes; in the step it is free.
  config.augment_on = 'device'
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
  return config


main = instance_coco.main

if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/coco_r50fpn')
