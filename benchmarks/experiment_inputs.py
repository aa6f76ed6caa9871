"""Every experiment's training input, built as its `main` and the training loop build it.

Shared by benchmarks/input_pipeline.py (how fast the host makes batches) and
`benchmarks/gpu_step.py --prepare` (real batches for the device check). For each entry:
the experiment's config (experiments/*.get_config), its sources
(experiments/common.sources), augmentation policy (common.augment_fns with the
experiment's fill / drop mode: on the host in tf.data, or for `augment_on='device'` in
the step, which gpu_step.py rebuilds from the spec), normalisation, and what the step needs as plain
values (model config, optimizer config, task arguments), so the device side rebuilds
the step without TensorFlow or ml_collections.

`H100` holds issue 14's table: the jitted step's images/s on one H100 (float32,
bfloat16), synthetic device-resident batches; None where the issue has no row.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from benchmarks import coco_scale

SCRATCH = '/tmp/redconv_bench'


@dataclasses.dataclass(frozen=True)
class Entry:
  key: str
  title: str
  experiment: str                 # module under experiments/
  variant: Optional[str]          # get_config's argument
  model_key: str = ''             # dense_vs_conv: which of config.models
  config_updates: Optional[dict] = None
  data_updates: Optional[dict] = None
  h100: Optional[tuple[float, float]] = None  # (float32, bfloat16) images/s


ENTRIES = {e.key: e for e in [
    Entry('mlp', 'MLP, Fashion-MNIST idx, batch 128', 'dense_vs_conv', None, 'mlp',
          data_updates=dict(source='fashion_mnist_idx', data_dir='../shared/data/fashion_mnist')),
    Entry('cnn', 'CNN, Fashion-MNIST idx, batch 128', 'dense_vs_conv', None, 'cnn',
          data_updates=dict(source='fashion_mnist_idx', data_dir='../shared/data/fashion_mnist')),
    Entry('airbench', 'airbench layout, CIFAR-10 JPEG folder, batch 1024', 'cifar10', 'gpu',
          h100=(120_000, 212_000)),
    Entry('resnet20', 'ResNet-20, CIFAR-10 JPEG folder, batch 512', 'cifar10', 'gpu',
          config_updates=dict(model=dict(name='resnet20'), batch_size=512),
          h100=(78_000, 130_000)),
    Entry('unet_camvid', 'U-Net depth 4, CamVid 144x192 crops, batch 8', 'segment_semantic',
          'camvid', h100=(1_300, 1_800)),
    # The 128x128 depth-3 row is the nearest: ISBI's U-Net (depth 4, 192x192
    # crops, batch 8) costs more per image, so that rate is an upper bound of its need.
    Entry('unet_isbi', 'U-Net depth 4, ISBI 192x192 crops, batch 8', 'segment_binary', 'isbi',
          h100=(4_000, 7_800)),
    Entry('mask_rcnn_coco128', 'Mask R-CNN, instance_coco, coco128 256x256, batch 8',
          'instance_coco', 'coco128', h100=(458, 314)),
    Entry('mask_rcnn_coco20k', 'Mask R-CNN, instance_coco, 20,000 generated COCO images, '
          'batch 8', 'instance_coco', 'coco128', data_updates=dict(data_dir='<coco20k>'),
          h100=(458, 314)),
    Entry('mask_rcnn_coco20k_records', 'Mask R-CNN, instance_coco, the 20,000 images '
          'converted to coco_records, batch 8', 'instance_coco', 'coco128',
          data_updates=dict(source='coco_records', data_dir='<coco20k_records>'),
          h100=(458, 314)),
    # cifar10's gpu config augments in the step; these rows show the host doing it.
    Entry('airbench_host_augment', 'airbench layout, CIFAR-10 JPEG folder, batch 1024, '
          'augmentation on the host', 'cifar10', 'gpu',
          config_updates=dict(augment_on='host'), h100=(120_000, 212_000)),
    Entry('mask_rcnn_shapes', 'Mask R-CNN, instance_shapes 64x64, batch 16', 'instance_shapes',
          'shapes', data_updates=dict(data_dir='<shapes>'), h100=(1_540, 1_460)),
]}


@dataclasses.dataclass
class Built:
  entry: Entry
  config: Any                   # the experiment's ml_collections config
  source: Any                   # data.sources.Source (training)
  augment_fn: Any               # data.pipeline.AugmentFn or None (None: device or no policy)
  spec: dict[str, Any]          # plain values for benchmarks/gpu_step.py


def _config(entry: Entry):
  import importlib  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'experiments.{entry.experiment}')
  config = module.get_config(entry.variant)
  updates = dict(entry.config_updates or {})
  if 'model' in updates:
    config.model = ml_collections.ConfigDict(updates.pop('model'))
  config.update(updates)
  data_updates = dict(entry.data_updates or {})
  if data_updates.get('data_dir') == '<coco20k>':
    data_updates['data_dir'] = coco_scale.write_repeated_coco()
  elif data_updates.get('data_dir') == '<coco20k_records>':
    data_updates['data_dir'] = coco_scale.write_repeated_records()
  elif data_updates.get('data_dir') == '<shapes>':
    data_updates['data_dir'] = module.write_synthetic(config, SCRATCH)
  if data_updates:
    config.data = ml_collections.ConfigDict({**config.data.to_dict(), **data_updates})
  return config


def build(key: str) -> Built:
  """The entry's config, training source, augmentation and step spec."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  entry = ENTRIES[key]
  config = _config(entry)
  train_source, _ = common.sources(config, config.get('eval_split', 'test'))
  names = train_source.class_names
  spec: dict[str, Any] = {
      'key': key, 'title': entry.title, 'experiment': entry.experiment,
      'variant': entry.variant, 'batch_size': int(config.batch_size),
      'optimizer': config.optimizer.to_dict(), 'num_epochs': int(config.num_epochs),
      'steps_per_epoch': train_source.num_examples // int(config.batch_size),
      'compute_dtype': config.get('compute_dtype', '') or 'float32',
      'augment': config.get('augment', ''), 'h100': entry.h100,
      'augment_on': config.get('augment_on', 'host'),
      'normalization': common.normalization(config), 'flip_averaged': None}
  if entry.experiment in ('dense_vs_conv', 'cifar10'):
    model = (config.models[entry.model_key] if entry.model_key else config.model).to_dict()
    spec['model'] = {**model, 'num_classes': len(names)}
    spec['task'] = {'kind': 'classification',
                    'label_smoothing': float(config.get('label_smoothing', 0.0))}
    if entry.experiment == 'cifar10':
      spec['flip_averaged'] = bool(config.tta_flip)
    augment_options = {}
  elif entry.experiment in ('segment_semantic', 'segment_binary'):
    from tasks.segmentation import analysis  # pylint: disable=g-import-not-at-top
    binary = config.model.get('num_classes', 0) == 1
    weights = analysis.class_weights(config.loss.class_weights, train_source)
    spec['model'] = {**config.model.to_dict(), 'num_classes': 1 if binary else len(names)}
    spec['task'] = {'kind': 'segmentation', 'class_names': list(names),
                    'ce_weight': float(config.loss.ce_weight),
                    'dice_weight': float(config.loss.dice_weight),
                    'class_weights': None if weights is None else [float(w) for w in weights]}
    augment_options = {'fill': {'mask': int(config.ignore_id)}}
  else:
    weights = dict(config.loss_weights.to_dict())
    if not train_source.metadata.get('has_masks', True):
      weights['mask'] = 0.0
    spec['model'] = {**config.model.to_dict(), 'num_classes': len(names) - 1}
    spec['task'] = {'kind': 'instance', 'loss_weights': weights}
    augment_options = {'drop_mode': 'invalidate'}
  spec['augment_options'] = augment_options  # build_device_policy's, for gpu_step.py
  augment_fn = common.augment_fns(config, **augment_options)['augment_fn']
  return Built(entry, config, train_source, augment_fn, spec)


def train_batches(built: Built, epoch: int = 0, threads: Optional[int] = None):
  """One epoch of the loop's training batches (tf.data), single host; with `threads`,
  the dataset's private thread pool has that many threads and each op one."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import pipeline  # pylint: disable=g-import-not-at-top
  config, source = built.config, built.source
  ds = pipeline.train_batches(
      source.records, batch_size=int(config.batch_size), seed=int(config.seed), epoch=epoch,
      augment_fn=built.augment_fn, shuffle_buffer=config.get('shuffle_buffer'),
      decode_fn=source.decode)
  if threads:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
  return ds
