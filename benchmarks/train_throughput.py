"""Training images/s: ours (jitted train_step fed by tf.data) vs. Keras 3 and PyTorch.

Each model is one `Workload` row; each framework trains it in its own subprocess
(so peak RSS and thread pools are its own) with the same architecture, batch size,
optimizer (AdamW, lr 1e-3, weight decay 1e-4 on kernels only, eps 1e-8), float32,
LeCun-normal init and the same training images:
  - ours: `train.steps.train_step` under `jax.jit(donate_argnums=(0,))`, uint8 batches
    from `data.pipeline.train_batches` (per-epoch shuffle) on the project's source
    (Fashion-MNIST: the IDX files), normalised inside the jitted step
    (`train.steps.normalized_image_inputs`, the step's `inputs_fn`).
  - keras: Keras 3 `model.fit` on the TensorFlow backend (its default jit_compile,
    which resolves to False here: TensorFlow's own kernels, oneDNN on x86), fed by a
    tf.data pipeline of pre-normalised arrays. `keras_xla` (not in the default list):
    the same with jit_compile=True, i.e. through XLA:CPU like JAX.
  - torch / torch_compile: PyTorch eager, and `torch.compile(model)` (inductor),
    a plain loop over a shuffled `DataLoader` of pre-normalised NCHW tensors.
Every framework gets 2 intra-op threads; PyTorch is also run with 1 (`_1t` rows;
`torch_compile` with 2 threads is left out of the default list because it was slower
than eager and took ~5 minutes on ResNet-20 here; add it with --frameworks). Per
framework: one warm-up repeat (its time, which includes tracing/compilation, is
reported), then `--repeats` timed repeats of `steps` steps; images/s is the median
over the repeats. img/CPU-s divides by the process's CPU time instead of wall time,
which other load on the machine disturbs less.

  PYTHONPATH=. python benchmarks/train_throughput.py [--models mlp,cnn,resnet20]
prints the table and writes benchmarks/results/train_throughput.md. The U-Net row
(models/unet.py at 128x128x3, batch 8, per-pixel softmax CE on `shapes` masks) is
run and written separately:
  PYTHONPATH=. python benchmarks/train_throughput.py --models unet \
      --output benchmarks/results/train_throughput_unet.md
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys

if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

# `_1t`: one intra-op thread. On this shared 2-core machine PyTorch's 2-thread OpenMP
# pool ran ~4x slower than 1 thread whenever other processes held a core, so both
# are reported; the fair-share comparison is the 2-thread row.
FRAMEWORKS = ('ours', 'keras', 'keras_xla', 'torch', 'torch_1t', 'torch_compile', 'torch_compile_1t')
LEARNING_RATE, WEIGHT_DECAY = 1e-3, 1e-4
CIFAR_CACHE = '/tmp/redconv_bench_cifar10_test.npz'


@dataclasses.dataclass(frozen=True)
class Workload:
  """One row group: a model of ours (models.build_model config) and its peers by name."""
  name: str
  model_config: dict
  dataset: str           # 'fashion_mnist' | 'cifar10' | 'shapes' (segmentation masks)
  steps: int             # steps per timed repeat
  peer: str              # function name in peers_keras / peers_torch
  batch_size: int = 128  # unless --batch_size is given


WORKLOADS = {
    'mlp': Workload('mlp', {'name': 'mlp', 'hidden_widths': (512, 256)}, 'fashion_mnist',
                    100, 'mlp'),
    'cnn': Workload('cnn', {'name': 'cnn', 'widths': (32, 64), 'dense_width': 256},
                    'fashion_mnist', 20, 'cnn'),
    'resnet20': Workload('resnet20', {'name': 'resnet20'}, 'cifar10', 6, 'resnet20'),
    # experiments/segment_semantic.py's model (depth 3, width 16, BatchNorm, transposed
    # convs) at 128x128, 4 classes, per-pixel softmax CE; batch 8 as its CamVid variant.
    'unet': Workload('unet', {'name': 'unet', 'num_classes': 4, 'depth': 3, 'base_width': 16,
                              'norm': 'batch', 'upsample': 'transpose'}, 'shapes', 8, 'unet',
                     batch_size=8),
}
SHAPES_EXAMPLES, SHAPES_SIZE = 256, (128, 128)


def load_arrays(dataset: str) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
  """(uint8 images [N, H, W, C], int32 labels [N] (shapes: masks [N, H, W]), mean, std)."""
  if dataset == 'shapes':
    from data import shapes  # pylint: disable=g-import-not-at-top
    arrays = shapes.shapes_source('train', train_examples=SHAPES_EXAMPLES,
                                  image_size=SHAPES_SIZE).dataset
    batch = next(arrays.batch(SHAPES_EXAMPLES).as_numpy_iterator())
    # experiments/segment_semantic.py's normalisation.
    return batch['image'], batch['mask'].astype(np.int32), (0.5,), (0.25,)
  if dataset == 'fashion_mnist':
    from data import idx  # pylint: disable=g-import-not-at-top
    images, labels = idx.load_split(os.path.join(common.SHARED_DATA, 'fashion_mnist'), 'train')
    return images, labels.astype(np.int32), (0.2860,), (0.3530,)
  if dataset == 'cifar10':
    from data import cifar10  # pylint: disable=g-import-not-at-top
    if not os.path.exists(CIFAR_CACHE):
      # The JPEG copy's 10,000 test images, decoded once by the project's folder
      # source (throughput does not depend on which images are used).
      source = cifar10.folder_source('test', os.path.join(common.SHARED_DATA, 'cifar10_jpeg'))
      examples = list(source.dataset.as_numpy_iterator())
      np.savez(CIFAR_CACHE, images=np.stack([e['image'] for e in examples]),
               labels=np.array([e['label'] for e in examples], np.int32))
    arrays = np.load(CIFAR_CACHE)
    return arrays['images'], arrays['labels'], cifar10.MEAN, cifar10.STD
  raise ValueError(f'train_throughput.py: dataset={dataset!r}; expected fashion_mnist or '
                   'cifar10 or shapes.')


def normalized(images: np.ndarray, mean: tuple, std: tuple) -> np.ndarray:
  return ((images.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std))


def worker_ours(w: Workload, batch_size: int, steps: int, repeats: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from train import optimizer, steps as train_steps  # pylint: disable=g-import-not-at-top
  from tasks.classification.task import cross_entropy_loss  # pylint: disable=g-import-not-at-top
  from train.state import create_train_state  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  images, labels, mean, std = load_arrays(w.dataset)
  loss_fn = cross_entropy_loss
  if w.dataset == 'fashion_mnist':
    from data import fashion_mnist  # pylint: disable=g-import-not-at-top
    dataset = fashion_mnist.idx_source(
        'train', os.path.join(common.SHARED_DATA, 'fashion_mnist')).dataset
  elif w.dataset == 'shapes':
    from data import shapes  # pylint: disable=g-import-not-at-top
    dataset = shapes.shapes_source('train', train_examples=SHAPES_EXAMPLES,
                                   image_size=SHAPES_SIZE).dataset
    loss_fn = pixel_cross_entropy
  else:
    dataset = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
  model = models.build_model(w.model_config)
  tx, _ = optimizer.build_optimizer(
      {'name': 'adamw', 'learning_rate': LEARNING_RATE, 'weight_decay': WEIGHT_DECAY},
      (repeats + 1) * steps)
  holder = {'state': create_train_state(model, tx, (1,) + images.shape[1:],
                                        jax.random.PRNGKey(0))}
  step = jax.jit(functools.partial(
      train_steps.train_step, loss_fn=loss_fn,
      inputs_fn=train_steps.normalized_image_inputs(mean, std)),
                 donate_argnums=(0,))

  stream = common.endless_train_batches(dataset, batch_size)

  def run():
    state = holder['state']
    for _ in range(steps):
      state, metrics = step(state, next(stream))
    holder['state'] = jax.block_until_ready(state)
    holder['loss'] = float(metrics['loss'])  # one host sync per repeat

  with common.Clock() as warmup:
    run()
  times = common.timed_repeats(run, repeats)
  params = sum(p.size for p in jax.tree_util.tree_leaves(holder['state'].params))
  return common.summarize(steps * batch_size, warmup, times, loss=holder['loss'],
                          params=int(params), device=str(jax.devices()[0].platform))


def pixel_cross_entropy(logits, batch: dict) -> tuple:
  """Mean softmax CE over the pixels of logits [B, H, W, C] vs. batch['mask'] [B, H, W].

  tasks.segmentation's CE alone: its full loss also computes soft Dice and pixel
  accuracy, which the peers' plain cross-entropy does not.
  """
  from tasks.segmentation import task as segmentation  # pylint: disable=g-import-not-at-top
  labels = batch['mask'].astype('int32')
  counted = segmentation.counted_pixels(labels, logits.shape[-1])
  ce = segmentation.softmax_cross_entropy(logits, labels, counted)
  return ce, {'loss': ce}


def worker_keras(w: Workload, batch_size: int, steps: int, repeats: int,
                 jit_compile: str | bool = 'auto') -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(common.THREADS)
  tf.config.set_visible_devices([], 'GPU')
  import keras  # pylint: disable=g-import-not-at-top
  from benchmarks import peers_keras  # pylint: disable=g-import-not-at-top
  images, labels, mean, std = load_arrays(w.dataset)
  x = normalized(images, mean, std)
  keras.utils.set_random_seed(0)
  model = getattr(peers_keras, w.peer)(input_shape=x.shape[1:])
  model.compile(optimizer=peers_keras.adamw(LEARNING_RATE, WEIGHT_DECAY),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit_compile)
  ds = (tf.data.Dataset.from_tensor_slices((x, labels)).shuffle(len(x), seed=0).repeat()
        .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
  clocks = []

  class EpochClock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      clocks.append(common.Clock().__enter__())

    def on_epoch_end(self, epoch, logs=None):
      clocks[-1].__exit__()

  history = model.fit(ds, epochs=repeats + 1, steps_per_epoch=steps, verbose=0,
                      callbacks=[EpochClock()])
  times = [(c.wall, c.cpu) for c in clocks[1:]]
  params = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
  return common.summarize(steps * batch_size, clocks[0], times,
                          loss=float(history.history['loss'][-1]), params=params,
                          jit_compile=str(model.jit_compile))


def worker_torch(w: Workload, batch_size: int, steps: int, repeats: int,
                 compile_model: bool, threads: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import peers_torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  images, labels, mean, std = load_arrays(w.dataset)
  x = torch.from_numpy(np.ascontiguousarray(normalized(images, mean, std).transpose(0, 3, 1, 2)))
  y = torch.from_numpy(labels.astype(np.int64))
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                       batch_size=batch_size, shuffle=True, drop_last=True)
  model = getattr(peers_torch, w.peer)()
  opt = peers_torch.adamw(model, LEARNING_RATE, WEIGHT_DECAY)
  forward = torch.compile(model) if compile_model else model
  model.train()

  def batches():
    while True:
      yield from loader

  stream = batches()
  holder = {}

  def run():
    for _ in range(steps):
      xb, yb = next(stream)
      opt.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(forward(xb), yb)
      loss.backward()
      opt.step()
    holder['loss'] = float(loss.item())

  with common.Clock() as warmup:
    run()
  times = common.timed_repeats(run, repeats)
  params = sum(p.numel() for p in model.parameters())
  return common.summarize(steps * batch_size, warmup, times, loss=holder['loss'],
                          params=params)


def run_worker(framework: str, w: Workload, batch_size: int, steps: int, repeats: int) -> dict:
  if framework == 'ours':
    return worker_ours(w, batch_size, steps, repeats)
  if framework == 'keras':
    return worker_keras(w, batch_size, steps, repeats)
  if framework == 'keras_xla':  # diagnostic: TensorFlow through XLA:CPU, as JAX is
    return worker_keras(w, batch_size, steps, repeats, jit_compile=True)
  if framework.startswith('torch'):
    return worker_torch(w, batch_size, steps, repeats, framework.startswith('torch_compile'),
                        1 if framework.endswith('_1t') else common.THREADS)
  raise ValueError(f'--worker={framework!r}; expected one of {FRAMEWORKS}.')


def _rate(v: float) -> str:
  return f'{v:.1f}' if v < 100 else f'{v:.0f}'  # the U-Net trains tens of images/s


def table_rows(results: dict, workloads: list[Workload]) -> list[list[str]]:
  rows = []
  for w in workloads:
    ours = results[w.name].get('ours', {}).get('items_per_s')
    for framework in results[w.name]:
      r = results[w.name][framework]
      if r is None:
        continue
      if 'error' in r:
        rows.append([w.name, framework, 'failed', '', '', '', '', r['error']])
        continue
      ratio = '' if framework == 'ours' or not ours else f'{ours / r["items_per_s"]:.2f}x'
      spread = ', '.join(_rate(v) for v in r['items_per_s_all'])
      rows.append([w.name, framework, _rate(r['items_per_s']), _rate(r['items_per_cpu_s']),
                   f'{r["warmup_s"]:.1f}', f'{r["peak_rss_mib"]:.0f}', ratio,
                   f'repeats: {spread}; load {r["load_1min"]:.1f}; '
                   f'{r.get("params", 0):,} params'])
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='mlp,cnn,resnet20')
  parser.add_argument('--frameworks', default='ours,keras,torch,torch_1t,torch_compile_1t')
  parser.add_argument('--batch_size', type=int, default=0,
                      help='0: per model (128; U-Net 8)')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--steps', type=int, default=0, help='steps per repeat (0: per model)')
  parser.add_argument('--timeout', type=float, default=300.0, help='seconds per worker')
  parser.add_argument('--output', default=os.path.join(common.REPO, 'benchmarks', 'results',
                                                      'train_throughput.md'))
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  workloads = [WORKLOADS[m] for m in args.models.split(',')]
  if args.worker:
    w = workloads[0]
    common.emit_result(run_worker(args.worker, w, args.batch_size or w.batch_size,
                                  args.steps or w.steps, args.repeats))
    return
  results: dict = {}
  for w in workloads:
    results[w.name] = {}
    for framework in args.frameworks.split(','):
      worker_args = ['--worker', framework, '--models', w.name, '--batch_size',
                     str(args.batch_size or w.batch_size), '--repeats', str(args.repeats),
                     '--steps', str(args.steps or w.steps)]
      threads = 1 if framework.endswith('_1t') else common.THREADS
      r = common.run_worker('benchmarks.train_throughput', worker_args, args.timeout,
                            common.thread_env(threads))
      results[w.name][framework] = r
      print(f'{w.name:9s} {framework:14s} ' + json.dumps(
          {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
           if k != 'items_per_s_all'}), file=sys.stderr, flush=True)
    counts = {f: r['params'] for f, r in results[w.name].items() if 'params' in r}
    if len(set(counts.values())) > 1:
      print(f'WARNING: {w.name}: parameter counts differ: {counts}', file=sys.stderr)
  headers = ['model', 'framework', 'images/s (median)', 'img/CPU-s', 'warm-up s',
             'peak RSS MiB', 'ours / this', 'notes']
  table = common.markdown_table(headers, table_rows(results, workloads))
  batches = ', '.join(f'{w.name} {args.batch_size or w.batch_size}' for w in workloads)
  intro = (f'Batch ({batches}), float32, AdamW; {args.repeats} timed repeats after '
           'one warm-up repeat (warm-up s includes compilation); each framework in its own '
           'process with 2 intra-op threads (`_1t`: 1 thread). `PYTHONPATH=. python '
           'benchmarks/train_throughput.py ' + ' '.join(sys.argv[1:]) + '`\n\n'
           + common.machine_description(['jax', 'jaxlib', 'flax', 'optax', 'tensorflow-cpu',
                                         'keras', 'torch']))
  print(table)
  common.write_report(args.output, 'Training throughput: ours vs. Keras 3 and PyTorch', intro,
                      table, NOTES)


NOTES = """Differences that remain: the peers read arrays normalised once up front, ours
reads uint8 batches from its tf.data pipeline and normalises them inside the step;
PyTorch uses NCHW (its native layout), so its flatten orders features differently;
ours uses a warm-up + cosine learning-rate schedule (optax), the peers a constant
rate; the random streams (init, shuffle, dropout) differ between frameworks.
U-Net: 256 generated 128x128 `shapes` examples (data/shapes.py, 4 classes); ours
reads them through the shapes source and `train_batches`, the peers the same arrays
normalised up front; loss: mean per-pixel softmax cross-entropy in all three (ours
`tasks.segmentation.task.softmax_cross_entropy`, without the Dice term of the experiment);
parameter counts are equal (printed per row)."""


if __name__ == '__main__':
  main()
