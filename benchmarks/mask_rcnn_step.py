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
picks rows (experiment, detectron2, fed). `--nms serial` runs the same steps with the
greedy NMS pass nms.py had before issue 15 (a `fori_loop` of one box per step,
`serial_greedy_keep` below) instead of the tiled parallel one.

`--nms_only` times NMS alone instead, as the RPN calls it (vmapped over 16 images,
IoU 0.7, K boxes in, all kept ones out), both passes, on K = 1000 and 2000 boxes: top-K
anchors of an 800x800 image scored at random (an untrained RPN) or by their overlap
with 10 objects (a trained one: crowded proposals), and a chain of boxes that each
suppress the next (the worst case of the parallel pass).

  PYTHONPATH=. python benchmarks/mask_rcnn_step.py        # ~5 min on 2 CPU cores
  PYTHONPATH=. python benchmarks/mask_rcnn_step.py --nms serial --output /tmp/serial.md
  PYTHONPATH=. python benchmarks/mask_rcnn_step.py --nms_only   # ~1 min
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from data import augment, pipeline, shapes  # noqa: E402
from data.sources import build_source  # noqa: E402
from models.mask_rcnn import nms as nms_lib  # noqa: E402
from models.mask_rcnn.anchors import generate_anchors  # noqa: E402
from models.mask_rcnn.box_ops import pairwise_iou  # noqa: E402
from models.mask_rcnn.model import MaskRCNN  # noqa: E402
from train import optimizer, steps  # noqa: E402
from tasks.instance.task import instance_task  # noqa: E402
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


def serial_greedy_keep(sorted_boxes: jnp.ndarray, candidates: jnp.ndarray,
                       sorted_groups: jnp.ndarray | None, iou_threshold: float
                       ) -> jnp.ndarray:
  """The greedy pass of nms.py before issue 15, kept here for comparison only.

  Same contract as `nms._greedy_keep`; a `fori_loop` visits one box per serial step.
  """
  num_boxes = sorted_boxes.shape[0]
  overlaps = pairwise_iou(sorted_boxes, sorted_boxes) > iou_threshold
  overlaps = overlaps & (jnp.arange(num_boxes)[None, :] > jnp.arange(num_boxes)[:, None])
  if sorted_groups is not None:
    overlaps = overlaps & (sorted_groups[:, None] == sorted_groups[None, :])
  return jax.lax.fori_loop(0, num_boxes, lambda i, keep: keep & ~(keep[i] & overlaps[i]),
                           candidates)


def nms_pass(name: str):
  """Context in which models.mask_rcnn.nms uses the named greedy pass."""
  if name == 'parallel':
    return contextlib.nullcontext()
  return mock.patch.object(nms_lib, '_greedy_keep', serial_greedy_keep)


def nms_inputs(kind: str, num_boxes: int, batch_size: int, seed: int = 0):
  """`[B, K, 4]` boxes and `[B, K]` scores of one of the `--nms_only` input kinds."""
  rng = np.random.default_rng(seed)
  if kind == 'chain':  # 12 px boxes 1.5 px apart: IoU 0.78 with the next, 0.6 after
    left = 1.5 * np.arange(num_boxes)
    chain = np.stack([left, np.zeros_like(left), left + 12, np.full_like(left, 12)], 1)
    return (np.broadcast_to(chain, (batch_size, num_boxes, 4)).astype(np.float32),
            np.broadcast_to(-np.arange(num_boxes, dtype=np.float32), (batch_size, num_boxes)))
  anchors = generate_anchors((800, 800), (4, 8, 16, 32, 64), (32, 64, 128, 256, 512),
                             (0.5, 1.0, 2.0))
  boxes, scores = [], []
  for _ in range(batch_size):
    logits = rng.normal(size=len(anchors))
    if kind == 'trained RPN':
      corner = rng.uniform(0, 600, (10, 2))
      objects = np.concatenate([corner, corner + rng.uniform(30, 200, (10, 2))], 1)
      logits += 8 * np.asarray(pairwise_iou(anchors, objects)).max(1)
    top = np.argsort(-logits)[:num_boxes]
    boxes.append(anchors[top] + rng.normal(0, 2, (num_boxes, 4)))
    scores.append(logits[top])
  return np.stack(boxes).astype(np.float32), np.stack(scores).astype(np.float32)


def measure_nms(kind: str, num_boxes: int, pass_name: str, *, batch_size: int,
                repeats: int) -> tuple[list, np.ndarray]:
  """A table row, and the kept indices (-1 in empty slots) `[B, K]`."""
  boxes, scores = nms_inputs(kind, num_boxes, batch_size)
  with nms_pass(pass_name):
    run_nms = jax.jit(jax.vmap(functools.partial(
        nms_lib.nms, iou_threshold=0.7, max_outputs=num_boxes)))
    with common.Clock() as warmup:
      indices, keep_valid = jax.block_until_ready(run_nms(boxes, scores))
    times = common.timed_repeats(lambda: jax.block_until_ready(run_nms(boxes, scores)),
                                 repeats)
  result = common.summarize(batch_size, warmup, times)
  return [kind, num_boxes, pass_name, f'{1e3 * batch_size / result["items_per_s"]:.1f}',
          f'{1e3 * batch_size / result["items_per_cpu_s"]:.1f}',
          f'{np.asarray(keep_valid).sum(1).mean():.0f}', f'{result["load_1min"]:.2f}'
          ], np.where(keep_valid, indices, -1)


def write_table(path: str, title: str, intro: str, headers: list, rows: list,
                notes: str) -> None:
  table = common.markdown_table(headers, rows)
  common.write_report(path, title, intro, table, notes)
  print(table)


def main_nms_only(args) -> None:
  rows = []
  for kind in ('untrained RPN', 'trained RPN', 'chain'):
    for num_boxes in (1000, 2000):
      kept = {}
      for pass_name in ('serial', 'parallel'):
        row, kept[pass_name] = measure_nms(kind, num_boxes, pass_name,
                                           batch_size=args.batch_size, repeats=args.repeats)
        rows.append(row)
        print(row, flush=True)
      if not np.array_equal(kept['serial'], kept['parallel']):
        raise AssertionError(f'mask_rcnn_step.py: the two NMS passes disagree on {kind}, '
                             f'K = {num_boxes}.')
  intro = (f'`models.mask_rcnn.nms.nms` alone, jitted and vmapped over {args.batch_size} '
           f'images, IoU 0.7, K boxes in and all kept ones out; {args.repeats} timed '
           'calls after a warm-up call. "serial" is the pass before issue 15 (one box per '
           'fori_loop step), "parallel" the tiled fixed point now in nms.py.\n\n'
           + common.machine_description(['jax', 'jaxlib']))
  notes = ('Both passes keep the same boxes (tests/models/mask_rcnn/test_nms.py checks '
           'the parallel one against a NumPy greedy reference). The parallel pass takes '
           'a few serial steps per tile of 256 boxes where the serial one takes K; the '
           'chain is its worst case, about K steps as well.')
  write_table(args.output or 'benchmarks/results/mask_rcnn_nms.md',
              'Greedy NMS: serial vs parallel pass', intro,
              ['input', 'K', 'greedy pass', 'ms (median)', 'CPU ms (median)', 'kept / image',
               'load'], rows, notes)


def main_steps(args) -> None:
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
  intro = (f'Mask R-CNN train step on 64x64 synthetic shapes, batch {args.batch_size}, '
           f'{args.repeats} x {args.steps} steps after a warm-up repeat, {args.nms} '
           'greedy NMS pass (see `--nms`).\n\n'
           + common.machine_description(['jax', 'flax', 'tensorflow-cpu']))
  notes = ('The second stage (RoIAlign gathers and their scatter-add gradients, the box '
           'and mask heads) dominates: the backbone + FPN is a small part of the step on '
           'a CPU, so the RoI counts and head widths set the speed (first two rows). The '
           'gap between the first and last rows is what the real input path costs (PNG '
           'decode in a Python generator, augmentation, batching).')
  write_table(args.output or 'benchmarks/results/mask_rcnn_step.md',
              'Mask R-CNN training throughput', intro,
              ['config', 'compute dtype', 'parameters', 'img/s (median)', 'img/CPU-s',
               'warm-up s', 'load'], rows, notes)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--nms', choices=('parallel', 'serial'), default='parallel')
  parser.add_argument('--nms_only', action='store_true')
  parser.add_argument('--output', default=None)
  parser.add_argument('--dtypes', default='float32', help='comma-separated compute dtypes')
  parser.add_argument('--rows', default='experiment,detectron2,fed')
  args = parser.parse_args()
  if args.nms_only:
    main_nms_only(args)
    return
  with nms_pass(args.nms):
    main_steps(args)


if __name__ == '__main__':
  main()
