"""Mask R-CNN training throughput on synthetic shapes (64x64, batch 16): where the time goes.

Rows (each the project's real `train.steps.train_step`, jitted with a donated state):
  experiment      the config of experiments/instance_shapes.py (32 RoIs, 8 mask RoIs
                  per image, fc 128, mask head width 32), one batch reused
  second stage x  detectron2-like sizes: 64 RoIs, 16 mask RoIs, fc 256, mask width 64
  fed by COCO     the experiment config fed by the real input path: PNG + COCO JSON
                  decoded by data/coco.py, flip + brightness augmentation, batching
There is no peer: no maintained JAX Mask R-CNN, and torchvision is not installed here.
One warm-up repeat (compilation), then `--repeats` repeats of `--steps` steps; the
table shows the median images/s and images per CPU-second. `--dtypes float32,bfloat16`
measures each row in each compute dtype (bfloat16 from the backbone through the heads,
float32 parameters, losses and box arithmetic: models/mask_rcnn/model.py); `--rows`
picks rows (experiment, detectron2, fed).

  PYTHONPATH=. python benchmarks/mask_rcnn_step.py        # ~5 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from data import augment, pipeline, shapes  # noqa: E402
from data.sources import build_source  # noqa: E402
from models.mask_rcnn.model import MaskRCNN  # noqa: E402
from train import optimizer, steps  # noqa: E402
from train.instance_loss import instance_task  # noqa: E402
from train.state import create_train_state  # noqa: E402

EXPERIMENT = dict(num_rois=32, num_mask_rois=8, fc_width=128, mask_head_width=32)
DETECTRON_LIKE = dict(num_rois=64, num_mask_rois=16, fc_width=256, mask_head_width=64)


def _batches(data_dir: str, batch_size: int, augmented: bool):
  source = build_source({'source': 'coco_json', 'data_dir': data_dir,
                         'image_size': (64, 64), 'max_instances': 4}, 'train')
  policy = augment.build_policy('flip_lr|brightness(0.1)', drop_mode='invalidate')
  epoch = 0
  while True:
    yield from pipeline.as_numpy(pipeline.train_batches(
        source.dataset, batch_size=batch_size, seed=0, epoch=epoch,
        augment_fn=policy if augmented else None, shuffle_buffer=1000))
    epoch += 1


def measure(name: str, model_kwargs: dict, data_dir: str, *, batch_size: int, steps_n: int,
            repeats: int, fed: bool, dtype: str = 'float32') -> list:
  model = MaskRCNN(num_classes=3, dtype=jnp.dtype(dtype), **model_kwargs)
  task = instance_task(0.5, 0.25)
  tx, _ = optimizer.build_optimizer({'name': 'adamw', 'learning_rate': 1e-3}, 1000)
  state = create_train_state(model, tx, (1, 64, 64, 3), jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.train_step, loss_fn=task.loss_fn,
                                   inputs_fn=task.inputs_fn), donate_argnums=(0,))
  batches = _batches(data_dir, batch_size, augmented=fed)
  fixed = next(batches)
  holder = {'state': state}

  def run():
    for _ in range(steps_n):
      holder['state'], metrics = step(holder['state'], next(batches) if fed else fixed)
    jax.block_until_ready(metrics)

  with common.Clock() as warmup:
    run()
  result = common.summarize(steps_n * batch_size, warmup, common.timed_repeats(run, repeats))
  params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(state.params))
  return [name, dtype, f'{params:,}', f'{result["items_per_s"]:.1f}',
          f'{result["items_per_cpu_s"]:.1f}', f'{result["warmup_s"]:.1f}',
          f'{result["load_1min"]:.2f}']


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--output', default='benchmarks/results/mask_rcnn_step.md')
  parser.add_argument('--dtypes', default='float32', help='comma-separated compute dtypes')
  parser.add_argument('--rows', default='experiment,detectron2,fed')
  args = parser.parse_args()
  wanted = args.rows.split(',')
  rows = []
  with tempfile.TemporaryDirectory() as data_dir:
    shapes.write_coco(data_dir, 400, seed=0, split='train', image_size=(64, 64),
                      max_instances=4, size_range=(0.12, 0.25))
    for key, name, kwargs, fed in (
        ('experiment', 'experiment', EXPERIMENT, False),
        ('detectron2', 'second stage x2 (detectron2-like)', DETECTRON_LIKE, False),
        ('fed', 'experiment, fed by COCO pipeline', EXPERIMENT, True)):
      if key not in wanted:
        continue
      for dtype in args.dtypes.split(','):
        rows.append(measure(name, kwargs, data_dir, batch_size=args.batch_size,
                            steps_n=args.steps, repeats=args.repeats, fed=fed, dtype=dtype))
        print(rows[-1], flush=True)
  table = common.markdown_table(
      ['config', 'compute dtype', 'parameters', 'img/s (median)', 'img/CPU-s', 'warm-up s',
       'load'], rows)
  intro = (f'Mask R-CNN train step on 64x64 synthetic shapes, batch {args.batch_size}, '
           f'{args.repeats} x {args.steps} steps after a warm-up repeat.\n\n'
           + common.machine_description(['jax', 'flax', 'tensorflow-cpu']))
  notes = ('The second stage (RoIAlign gathers and their scatter-add gradients, the box '
           'and mask heads) dominates: the backbone + FPN is a small part of the step on '
           'a CPU, so the RoI counts and head widths set the speed (first two rows). The '
           'gap between the first and last rows is what the real input path costs (PNG '
           'decode in a Python generator, augmentation, batching).')
  common.write_report(args.output, 'Mask R-CNN training throughput', intro, table, notes)
  print(table)


if __name__ == '__main__':
  main()
