"""Images/s of augmentation policies on 256x256 image+mask pairs, ours vs. albumentations.

Policies (`--policies`), each expressed in both libraries with the same ranges (mask:
nearest, fill 255 = ignore):
  segmentation: flip_lr | scale_crop(0.5, 1.0) | rotate(10) | brightness(0.2) |
    contrast(0.2) (a typical segmentation policy: one interpolated warp);
  flip_crop: flip_lr | pad_crop(8) (whole-pixel: ours copies, no interpolation).
Data: CamVid training scenes (../shared/data/camvid_240x180) resized to 256x256 once,
held in memory, cycled. Rows, each the median of `--repeats` timed passes over
`--examples` examples after one warm-up pass:
  - tf.data, no augmentation: the cost of the pipeline itself (reference).
  - ours in tf.data map, AUTOTUNE parallel calls, and with 1 parallel call.
  - albumentations in a plain Python loop over NumPy arrays (its usual use), and
    inside tf.data through tf.numpy_function with AUTOTUNE parallel calls.
Every tf.data row batches by 32 and pulls NumPy batches, as a training loop would.
`img/CPU-s` divides by this process's CPU time (all threads): images per core-second,
the comparison per core that a shared machine's load does not distort.

  PYTHONPATH=. python benchmarks/augment_throughput.py
writes benchmarks/results/augment_throughput.md and prints the same table.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import statistics
import sys
import time
from typing import Callable

if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data import augment, pipeline  # noqa: E402

SIZE = 256
BATCH = 32
POLICIES = {
    'segmentation': 'flip_lr|scale_crop(0.5, 1.0)|rotate(10)|brightness(0.2)|contrast(0.2)',
    'flip_crop': 'flip_lr|pad_crop(8)',
}
PAD = 8
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data',
                     'camvid_240x180')


def load_pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
  """`count` CamVid (image [256, 256, 3] uint8, mask [256, 256] uint8) pairs."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  names = sorted(glob.glob(os.path.join(_DATA, 'train', '*.png')))[:count]
  if not names:
    raise FileNotFoundError(f'benchmarks/augment_throughput.py: no CamVid PNGs under '
                            f'{_DATA}/train; see ../shared/data/README.md.')
  images, masks = [], []
  for name in names:
    image = Image.open(name).convert('RGB').resize((SIZE, SIZE), Image.BILINEAR)
    mask = Image.open(name.replace(f'{os.sep}train{os.sep}', f'{os.sep}trainannot{os.sep}'))
    images.append(np.asarray(image))
    masks.append(np.asarray(mask.resize((SIZE, SIZE), Image.NEAREST)))
  return np.stack(images), np.stack(masks).astype(np.uint8)


def albumentations_policy(name: str):
  import albumentations as A  # pylint: disable=g-import-not-at-top
  import cv2  # pylint: disable=g-import-not-at-top
  if name == 'flip_crop':
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.PadIfNeeded(SIZE + 2 * PAD, SIZE + 2 * PAD, border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=255),
        A.RandomCrop(SIZE, SIZE),
    ], seed=0)
  return A.Compose([
      A.HorizontalFlip(p=0.5),
      A.RandomResizedCrop(size=(SIZE, SIZE), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), p=1.0),
      A.Rotate(limit=10, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255, p=1.0),
      A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0),
  ], seed=0)


def base_dataset(images, masks, examples: int) -> tf.data.Dataset:
  ds = tf.data.Dataset.from_tensor_slices({'image': images, 'mask': masks})
  return ds.repeat().take(examples)


def ours(images, masks, examples, parallel, name) -> tf.data.Dataset:
  policy = augment.build_policy(POLICIES[name])
  ds = base_dataset(images, masks, examples).enumerate()
  ds = ds.map(lambda i, f: policy(f, pipeline.example_seed(0, 0, i)),
              num_parallel_calls=parallel, deterministic=True)
  return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def identity(images, masks, examples) -> tf.data.Dataset:
  return base_dataset(images, masks, examples).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def albumentations_in_tf_data(images, masks, examples, name) -> tf.data.Dataset:
  transform = albumentations_policy(name)

  def apply(image, mask):
    out = transform(image=image, mask=mask)
    return out['image'], out['mask']

  def map_fn(f):
    image, mask = tf.numpy_function(apply, [f['image'], f['mask']], [tf.uint8, tf.uint8])
    return {'image': tf.ensure_shape(image, [SIZE, SIZE, 3]),
            'mask': tf.ensure_shape(mask, [SIZE, SIZE])}

  ds = base_dataset(images, masks, examples).map(map_fn, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def time_dataset(make: Callable[[], tf.data.Dataset]) -> Callable[[], None]:
  dataset = make()

  def run():
    for _ in dataset.as_numpy_iterator():
      pass
  return run


def time_albumentations_loop(images, masks, examples, name) -> Callable[[], None]:
  transform = albumentations_policy(name)

  def run():
    for i in range(examples):
      out = transform(image=images[i % len(images)], mask=masks[i % len(masks)])
      assert out['mask'].shape == (SIZE, SIZE)
  return run


def measure(run: Callable[[], None], examples: int, repeats: int
            ) -> tuple[float, float, list[float]]:
  """(median images/s, median images per CPU-second, every pass's images/s)."""
  run()  # warm-up: tracing, thread pools, caches
  rates, per_cpu = [], []
  for _ in range(repeats):
    start, cpu = time.perf_counter(), time.process_time()
    run()
    rates.append(examples / (time.perf_counter() - start))
    per_cpu.append(examples / (time.process_time() - cpu))
  return statistics.median(rates), statistics.median(per_cpu), rates


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--examples', type=int, default=512)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--policies', default='segmentation,flip_crop')
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results',
                                                    'augment_throughput.md'))
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  import albumentations as A  # pylint: disable=g-import-not-at-top
  import cv2  # pylint: disable=g-import-not-at-top
  load = os.getloadavg()[0]
  images, masks = load_pairs(64)
  n = args.examples
  names = args.policies.split(',')
  rows = [('(none)', 'tf.data, no augmentation (reference)', 'AUTOTUNE',
           time_dataset(lambda: identity(images, masks, n)))]
  for name in names:
    rows += [
        (name, 'ours (data.augment) in tf.data', 'AUTOTUNE',
         time_dataset(lambda name=name: ours(images, masks, n, tf.data.AUTOTUNE, name))),
        (name, 'ours (data.augment) in tf.data', '1',
         time_dataset(lambda name=name: ours(images, masks, n, 1, name))),
        (name, f'albumentations {A.__version__}, Python loop', '1 (loop)',
         time_albumentations_loop(images, masks, n, name)),
        (name, f'albumentations {A.__version__} in tf.data (numpy_function)', 'AUTOTUNE',
         time_dataset(lambda name=name: albumentations_in_tf_data(images, masks, n, name))),
    ]
  lines = [
      f'# Augmentation throughput: {SIZE}x{SIZE} image + mask pairs', '',
      'Policies: ' + '; '.join(f'{k}: `{POLICIES[k]}`' for k in names) +
      ' (albumentations: HorizontalFlip, RandomResizedCrop, Rotate, '
      'RandomBrightnessContrast with the same ranges; flip_crop: HorizontalFlip, '
      f'PadIfNeeded to {SIZE + 2 * PAD}, RandomCrop {SIZE}).',
      f'Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), '
      f'TensorFlow {tf.__version__}, OpenCV {cv2.__version__} '
      f'({cv2.getNumThreads()} threads). {n} examples per pass, batch {BATCH}, '
      f'median of {args.repeats} passes after one warm-up; img/CPU-s: images per '
      'CPU-second of this process (all threads).', '',
      '| policy | pipeline | map parallelism | images/s (median) | img/CPU-s (median) | '
      'all passes | load (1 min) |',
      '|---|---|---|---:|---:|---|---:|']
  for policy, name, parallel, run in rows:
    median, per_cpu, rates = measure(run, n, args.repeats)
    lines.append(f'| {policy} | {name} | {parallel} | {median:,.0f} | {per_cpu:,.0f} | '
                 f'{", ".join(f"{r:,.0f}" for r in rates)} | {os.getloadavg()[0]:.1f} |')
    print(lines[-1], flush=True)
  lines += ['', f'Load average (1 min) at the start / end: {load:.1f} / {os.getloadavg()[0]:.1f} '
            '(other processes share these cores; rows with a wide spread were contended).',
            '', 'Command: `PYTHONPATH=. python benchmarks/augment_throughput.py ' +
            ' '.join(sys.argv[1:]) + '`', '']
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write('\n'.join(lines))
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
