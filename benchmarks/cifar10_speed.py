"""Time to a target CIFAR-10 test accuracy, the field's benchmark of training efficiency.

Trains the `experiments/cifar10.py` recipe (the `gpu` variant on a GPU, the `cpu`
variant otherwise) from scratch, evaluating after every epoch, and reports the
training time from the first step to the first evaluation at or above `--target`
(evaluation time excluded, input-pipeline waits included); compilation is timed
apart. On a CPU the default is a short budget (one epoch on 10,240 images), which
runs end to end and measures training images/s. Writes its table as markdown to
benchmarks/results/cifar10_speed.md.

  python benchmarks/cifar10_speed.py                       # CPU: short budget
  python benchmarks/cifar10_speed.py --full --target=0.94  # GPU: the whole recipe
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import tensorflow as tf  # noqa: E402

from experiments import cifar10  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                       'cifar10_speed.md')


def time_to_target(seconds_by_step: dict[int, float], history: list[dict], target: float
                   ) -> tuple[float, int] | None:
  """(training seconds, epoch) at the first evaluation with accuracy >= target."""
  for entry in history:
    if entry['accuracy'] >= target:
      return seconds_by_step[entry['step']], entry['epoch']
  return None


def run(args: argparse.Namespace) -> dict:
  on_gpu = jax.default_backend() == 'gpu'
  config = cifar10.get_config(args.variant or ('gpu' if on_gpu else 'cpu'))
  config.eval_every_epochs = 1
  config.progress_bar = False
  if args.data_dir:
    config.data.data_dir = args.data_dir
  if args.source:
    config.data.source = args.source
  if not args.full and not on_gpu:  # a short CPU budget unless asked for the full run
    config.num_epochs, config.train_examples = 1, 10_240
  if args.epochs:
    config.num_epochs = args.epochs
  if args.train_examples is not None:
    config.train_examples = args.train_examples
  train_source, test_source = cifar10.sources(config)
  with tempfile.TemporaryDirectory() as workdir:  # fresh: never resume a timed run
    result = cifar10.train(config, workdir, train_source, test_source)
    reached = time_to_target(result.seconds_by_step, result.eval_history, args.target)
  images = result.steps_per_epoch * config.num_epochs * config.batch_size
  device = jax.devices()[0]
  return {
      'device': f'{device.platform}: {getattr(device, "device_kind", "")} '
                f'({os.cpu_count()} host cores)',
      'model': config.model.name, 'dtype': config.compute_dtype or 'float32',
      'batch': config.batch_size, 'epochs': config.num_epochs,
      'train_images': train_source.num_examples,
      'accuracy': result.final_eval['accuracy'], 'target': args.target,
      'time_to_target': f'{reached[0]:.1f} (epoch {reached[1]})' if reached else 'not reached',
      'train_seconds': result.train_seconds, 'compile_seconds': result.compile_seconds,
      'images_per_second': images / result.train_seconds,
  }


def markdown(row: dict, command: str) -> str:
  lines = [
      '# CIFAR-10: time to target test accuracy', '',
      f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, '
      f'{platform.node()}, jax {jax.__version__}, tensorflow {tf.__version__}. Command: '
      f'`{command}`. Data: CIFAR-10 (JPEG copy) unless the source says otherwise. '
      'Time to target: training seconds from the first step to the first per-epoch '
      'evaluation at or above the target (evaluation excluded, compilation apart).', '',
      '| device | model | dtype | batch | epochs | training images | final test accuracy | '
      'target | time to target (s) | training (s) | compile (s) | training images/s |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
      f'| {row["device"]} | {row["model"]} | {row["dtype"]} | {row["batch"]} | '
      f'{row["epochs"]} | {row["train_images"]:,} | {row["accuracy"]:.4f} | {row["target"]} | '
      f'{row["time_to_target"]} | {row["train_seconds"]:.1f} | {row["compile_seconds"]:.1f} | '
      f'{row["images_per_second"]:,.0f} |', '']
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--target', type=float, default=0.94)
  parser.add_argument('--variant', choices=('cpu', 'gpu', 'runlocal'), default=None)
  parser.add_argument('--full', action='store_true', help='on a CPU: the whole recipe')
  parser.add_argument('--epochs', type=int, default=0)
  parser.add_argument('--train_examples', type=int, default=None)
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--source', default=None)
  parser.add_argument('--out', default=RESULTS)
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; the GPU belongs to JAX
  table = markdown(run(args), 'python benchmarks/cifar10_speed.py ' + ' '.join(sys.argv[1:]))
  print(table)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write(table)


if __name__ == '__main__':
  main()
