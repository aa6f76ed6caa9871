"""The coco_r50fpn train step (detectron2's R50-FPN 1x sizes) on this machine, and the
time of the 1x schedule (90,000 steps at batch 16) projected from it.

The model, loss and optimizer are exactly the config's (experiments/instance_coco_r50fpn.py:
512 RoIs, 128 mask RoIs, fc 1024, mask head 256, anchors on P2-P6); only
the image side (`--sizes`, default 512 and the config's 1024) and the batch (default 1)
may be changed. Images are synthetic shapes
with up to `max_instances` (100) objects, so every target tensor has the config's
static shape; the input pipeline is not timed. One warm-up repeat (compilation), then
`--repeats` repeats of `--steps` steps; the median images/s is reported.

  PYTHONPATH=. python benchmarks/coco_r50fpn_step.py       # ~10 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common  # noqa: E402
from data import shapes  # noqa: E402
from experiments import instance_coco_r50fpn  # noqa: E402
from models import build_model  # noqa: E402
from train import optimizer, steps  # noqa: E402
from tasks.instance.task import instance_task  # noqa: E402
from train.state import create_train_state  # noqa: E402

ONE_X_IMAGES = 90_000 * 16  # detectron2's 1x: 90k steps at batch 16


def measure(size: int, *, batch_size: int, steps_n: int, repeats: int, dtype: str) -> list:
  config = instance_coco_r50fpn.get_config()
  model = build_model({**config.model.to_dict(), 'num_classes': 80},
                      dtype=jnp.dtype(dtype))
  task = instance_task(config.preprocess.mean, config.preprocess.std)
  tx, _ = optimizer.build_optimizer(config.optimizer.to_dict(), 90_000)
  state = jax.jit(lambda: create_train_state(model, tx, (1, size, size, 3),
                                             jax.random.PRNGKey(0)))()
  arrays = shapes.make_split(batch_size, 0, 'train', image_size=(size, size),
                             max_instances=config.data.max_instances, size_range=(0.05, 0.3))
  arrays.pop('mask')
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  step = jax.jit(functools.partial(steps.train_step, loss_fn=task.loss_fn,
                                   inputs_fn=task.inputs_fn), donate_argnums=(0,))
  holder = {'state': state}

  def run():
    for _ in range(steps_n):
      holder['state'], metrics = step(holder['state'], batch)
    jax.block_until_ready(metrics)

  with common.Clock() as warmup:
    run()
  result = common.summarize(steps_n * batch_size, warmup, common.timed_repeats(run, repeats))
  images_per_s = result['items_per_s']
  return [f'{size} x {size}', dtype, batch_size, f'{images_per_s:.3f}',
          f'{result["items_per_cpu_s"]:.3f}', f'{result["warmup_s"]:.0f}',
          f'{ONE_X_IMAGES / images_per_s / 86400:,.0f}', f'{result["load_1min"]:.2f}']


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='512,1024')
  parser.add_argument('--batch_size', type=int, default=1)
  parser.add_argument('--steps', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--output', default='benchmarks/results/coco_r50fpn_step.md')
  args = parser.parse_args()
  rows = []
  for size in (int(s) for s in args.sizes.split(',')):
    rows.append(measure(size, batch_size=args.batch_size, steps_n=args.steps,
                        repeats=args.repeats, dtype=args.dtype))
    print(rows[-1], flush=True)
  table = common.markdown_table(
      ['image', 'compute dtype', 'batch', 'img/s (median)', 'img/CPU-s', 'warm-up s',
       '1x schedule at this speed (days)', 'load'], rows)
  intro = (f'coco_r50fpn train step (ResNet-50 FPN Mask R-CNN, detectron2 1x sizes), '
           f'{args.repeats} x {args.steps} steps after a warm-up repeat, synthetic images. '
           'CPU only: no GPU figure is claimed here.\n\n'
           + common.machine_description(['jax', 'flax']))
  notes = ('The last column is 90,000 steps x 16 images divided by the measured images/s: '
           'what the 1x schedule would take on this machine at that image size (the '
           "config's is 1024 x 1024). The second stage (512 RoIs, 128 mask RoIs of a "
           '4 x 256-channel mask head) costs the same at every image size.')
  common.write_report(args.output, 'coco_r50fpn train step on a CPU', intro, table, notes)
  print(table)


if __name__ == '__main__':
  main()
