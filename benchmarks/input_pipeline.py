"""Is the input or the step the bottleneck? Images/s of the tf.data pipeline alone, of
the jitted training step alone (one batch reused, already on the device), and of
the step fed by the pipeline, per model.

Pipeline rows: `data.pipeline.train_batches` (per-epoch shuffle, batch 128, prefetch)
on the project's sources, pulled as uint8 NumPy batches as the training loop pulls
them; the step normalises them (`train.steps.normalized_image_inputs`), because a
per-example normalising map in tf.data delivered only ~35,000 images/s here, less
than the MLP's step consumes (~58,000 images/s). If `pipeline alone` is well above `step
alone`, the step is the bottleneck; if `fed` is close to `step alone`, the step
does not stall waiting for input. On a 2-core CPU the pipeline's threads and the
step share the same cores, so `fed` also pays for producing the input.

  PYTHONPATH=. python benchmarks/input_pipeline.py
prints the table and writes benchmarks/results/input_pipeline.md.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from benchmarks import common  # noqa: E402
from benchmarks.train_throughput import WORKLOADS, load_arrays  # noqa: E402

# Sources the issue asks about that data/ does not provide yet.
NOT_YET_AVAILABLE = ('coco_json (COCO-format detection source)',)
# Pipeline-only rows (no classification step to compare with): segmentation sources.
SEGMENTATION_BATCH = 16


def measure_shapes(repeats: int) -> dict:
  """The synthetic shapes source (128x128 image + semantic mask), pipeline alone."""
  from data import pipeline, shapes  # pylint: disable=g-import-not-at-top
  with common.Clock() as build:
    source = shapes.shapes_source('train', train_examples=2000)
  batches = pipeline.as_numpy(pipeline.train_batches(
      source.dataset.repeat(), batch_size=SEGMENTATION_BATCH, seed=0, epoch=0))
  steps = 50

  def pull():
    for _ in range(steps):
      next(batches)

  with common.Clock() as warmup:
    pull()
  return {'source': 'shapes (2,000 generated 128x128 examples, semantic masks)',
          'build_s': build.wall,
          'pipeline': common.summarize(steps * SEGMENTATION_BATCH, warmup,
                                       common.timed_repeats(pull, repeats))}


def _dataset(dataset: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images, labels, mean, std = load_arrays(dataset)
  if dataset == 'fashion_mnist':
    from data import fashion_mnist  # pylint: disable=g-import-not-at-top
    ds = fashion_mnist.idx_source('train',
                                  os.path.join(common.SHARED_DATA, 'fashion_mnist')).dataset
    name = 'fashion_mnist_idx'
  else:
    # The CIFAR-10 JPEG copy's test split, decoded once (as the cached folder source is
    # after its first epoch).
    ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
    name = 'cifar10_folder (decoded, cached)'
  return ds, images.shape[1:], mean, std, name


def measure(model_name: str, batch_size: int, steps: int, repeats: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from train import optimizer, steps as train_steps  # pylint: disable=g-import-not-at-top
  from tasks.classification.task import cross_entropy_loss  # pylint: disable=g-import-not-at-top
  from train.state import create_train_state  # pylint: disable=g-import-not-at-top
  w = WORKLOADS[model_name]
  ds, shape, mean, std, source_name = _dataset(w.dataset)

  batches = common.endless_train_batches(ds, batch_size)
  items = steps * batch_size

  def pull():
    for _ in range(steps):
      next(batches)

  with common.Clock() as warmup:
    pull()
  pipeline_times = common.timed_repeats(pull, repeats)

  tx, _ = optimizer.build_optimizer({'name': 'adamw', 'learning_rate': 1e-3,
                                     'weight_decay': 1e-4}, 10_000)
  holder = {'state': create_train_state(models.build_model(w.model_config), tx, (1,) + shape,
                                        jax.random.PRNGKey(0))}
  step = jax.jit(functools.partial(
      train_steps.train_step, loss_fn=cross_entropy_loss,
      inputs_fn=train_steps.normalized_image_inputs(mean, std)),
                 donate_argnums=(0,))
  fixed = jax.device_put(next(batches))

  def run(fed: bool):
    state = holder['state']
    for _ in range(steps):
      state, _ = step(state, next(batches) if fed else fixed)
    holder['state'] = jax.block_until_ready(state)

  common.timed_repeats(lambda: run(False), 1)  # compile
  step_times = common.timed_repeats(lambda: run(False), repeats)
  fed_times = common.timed_repeats(lambda: run(True), repeats)
  return {'source': source_name,
          'pipeline': common.summarize(items, warmup, pipeline_times),
          'step': common.summarize(items, warmup, step_times),
          'fed': common.summarize(items, warmup, fed_times)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='mlp,cnn,resnet20')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--timeout', type=float, default=300.0)
  parser.add_argument('--pipeline_only', default='shapes')
  parser.add_argument('--output', default=os.path.join(common.REPO, 'benchmarks', 'results',
                                                      'input_pipeline.md'))
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker == 'shapes':
    common.emit_result(measure_shapes(args.repeats))
    return
  if args.worker:
    w = WORKLOADS[args.worker]
    common.emit_result(measure(w.name, args.batch_size, max(w.steps, 20), args.repeats))
    return
  rows = []
  for name in args.models.split(','):
    r = common.run_worker('benchmarks.input_pipeline',
                          ['--worker', name, '--batch_size', str(args.batch_size),
                           '--repeats', str(args.repeats)], args.timeout)
    print(name, r, file=sys.stderr, flush=True)
    if 'error' in r:
      rows.append([name, '', 'failed', '', '', '', r['error']])
      continue
    p, s, f = (r[k]['items_per_s'] for k in ('pipeline', 'step', 'fed'))
    bottleneck = 'step' if p > s else 'input'
    rows.append([name, r['source'], f'{p:.0f}', f'{s:.0f}', f'{f:.0f}', f'{p / s:.1f}x',
                 f'{bottleneck}; fed/step alone {f / s:.2f}; load '
                 f'{r["fed"]["load_1min"]:.1f}'])
  if 'shapes' in args.pipeline_only:
    r = common.run_worker('benchmarks.input_pipeline', ['--worker', 'shapes', '--repeats',
                                                        str(args.repeats)], args.timeout)
    if 'error' in r:
      rows.append(['', 'shapes', 'failed', '', '', '', r['error']])
    else:
      rows.append(['(U-Net, not timed here)', r['source'],
                   f'{r["pipeline"]["items_per_s"]:.0f}', '', '', '',
                   f'batch {SEGMENTATION_BATCH}; generating the 2,000 examples took '
                   f'{r["build_s"]:.1f} s at source build'])
  for name in NOT_YET_AVAILABLE:
    rows.append(['', name, 'not yet available', '', '', '', 'no such source in data/ yet'])
  headers = ['model', 'source', 'pipeline alone img/s', 'step alone img/s',
             'step fed by pipeline img/s', 'pipeline / step', 'bottleneck']
  table = common.markdown_table(headers, rows)
  intro = (f'Batch {args.batch_size}; medians of {args.repeats} repeats after a warm-up. '
           '`PYTHONPATH=. python benchmarks/input_pipeline.py ' + ' '.join(sys.argv[1:]) +
           '`\n\n' + common.machine_description(['jax', 'jaxlib', 'tensorflow-cpu']))
  print(table)
  common.write_report(args.output, 'Input pipeline vs. training step', intro, table,
                      'pipeline / step > 1: the input keeps up and the step is the bottleneck.')


if __name__ == '__main__':
  main()
