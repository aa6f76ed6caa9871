"""Train-step cost with the augmentation on the host (tf.data) vs. on the device (in the
jitted step), per experiment that augments: `config.augment_on` 'host' vs. 'device'.

For each experiment, its own config, training source, model, task and policy (as its
`main` wires them), one device, `--steps` timed steps after one compiling step:
  host    tf.data decodes and augments per example (AUTOTUNE map, overlapping the step),
          the jitted step normalises and trains;
  device  tf.data decodes only; the jitted step augments the uint8 batch
          (data/augment_jax.py), then normalises and trains.
Columns: wall seconds per step, and process CPU seconds (user + system, all threads:
XLA's and tf.data's) per step: on a shared machine the CPU seconds are the comparable
figure. Also the tf.data pipeline alone (no step) per batch, with and without the policy
(over 4x as many batches, so the prefetch buffer does not hide the work).

  PYTHONPATH=. nice -n 19 python benchmarks/augment_on.py [--steps 4] [--only cifar10]
"""
from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402

from data import augment, augment_jax, pipeline  # noqa: E402
from experiments import (cifar10, common, instance_nuclei, segment_binary,  # noqa: E402
                         segment_semantic)
from models import build_model  # noqa: E402
from tasks.classification.task import classification_task  # noqa: E402
from tasks.instance.task import instance_task  # noqa: E402
from tasks.segmentation import analysis  # noqa: E402
from tasks.segmentation import task as segmentation  # noqa: E402
from train import optimizer, steps  # noqa: E402
from train.state import create_train_state  # noqa: E402


def _cifar10():
  config = cifar10.get_config()
  train_source, _ = cifar10.sources(config)
  model = cifar10.build_classifier(config, len(train_source.class_names))
  task = classification_task(config.label_smoothing, **common.normalization(config))
  return config, train_source, model, task, {}


def _segmentation(module, variant):
  config = module.get_config(variant)
  train_source, _ = common.sources(config, config.eval_split)
  names = train_source.class_names
  weights = analysis.class_weights(config.loss.class_weights, train_source)
  binary = config.model.get('num_classes', 0) == 1
  task = segmentation.segmentation_task(names, config.loss.ce_weight, config.loss.dice_weight,
                                        weights, **common.normalization(config))
  model = build_model({**config.model.to_dict(), 'num_classes': 1 if binary else len(names)})
  return config, train_source, model, task, {'fill': {'mask': config.ignore_id}}


def _nuclei():
  config = instance_nuclei.get_config()
  train_source, _ = common.sources(config, config.eval_split)
  model = build_model({**config.model.to_dict(),
                       'num_classes': len(train_source.class_names) - 1})
  task = instance_task(**common.normalization(config),
                       loss_weights=config.loss_weights.to_dict())
  return config, train_source, model, task, {'drop_mode': 'invalidate'}


EXPERIMENTS = {
    'cifar10': _cifar10,
    'segment_semantic:camvid': lambda: _segmentation(segment_semantic, 'camvid'),
    'segment_binary:isbi': lambda: _segmentation(segment_binary, 'isbi'),
    'instance_nuclei': _nuclei,
}


def _cpu() -> float:
  t = os.times()
  return t.user + t.system


def _batches(config, source, augment_fn):
  return pipeline.as_numpy(pipeline.train_batches(
      source.records, batch_size=config.batch_size, seed=config.seed, epoch=0,
      augment_fn=augment_fn, decode_fn=source.decode))


def _time(iterator, n, body):
  body(next(iterator))  # compiles / fills the pipeline
  wall, cpu = time.perf_counter(), _cpu()
  for _ in range(n):
    body(next(iterator))
  return (time.perf_counter() - wall) / n, (_cpu() - cpu) / n


def measure(name: str, n: int) -> dict[str, tuple[float, float]]:
  config, source, model, task, options = EXPERIMENTS[name]()
  host = augment.build_policy(config.augment, **options)
  device = augment_jax.build_device_policy(config.augment, **options)
  tx, _ = optimizer.build_optimizer(config.optimizer, 1000)
  state0 = create_train_state(model, tx, (1,) + tuple(source.image_shape),
                              jax.random.PRNGKey(0))
  rows = {}
  # Enough batches that the prefetch buffer filled by the first one does not hide the work.
  many = max(4 * n, 16)
  rows['tf.data only, no policy'] = _time(_batches(config, source, None), many, lambda b: None)
  rows['tf.data only, host policy'] = _time(_batches(config, source, host), many,
                                            lambda b: None)
  for path, host_fn, device_fn in (('host', host, None), ('device', None, device)):
    train_fn = jax.jit(functools.partial(steps.train_step, loss_fn=task.loss_fn,
                                         inputs_fn=task.inputs_fn, augment_fn=device_fn))
    holder = {'state': jax.tree_util.tree_map(lambda x: x, state0)}

    def step(batch, holder=holder, train_fn=train_fn):
      holder['state'], metrics = train_fn(holder['state'], batch)
      jax.block_until_ready(metrics)
    rows[f'step, augment_on={path}'] = _time(_batches(config, source, host_fn), n, step)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--only', default='', help='comma-separated experiment names')
  args = parser.parse_args()
  names = [n for n in EXPERIMENTS if not args.only or n in args.only.split(',')]
  print(f'load average {os.getloadavg()}, {os.cpu_count()} cores, {args.steps} steps')
  print('| experiment | row | wall s / batch | CPU s / batch |\n|---|---|---|---|')
  for name in names:
    for row, (wall, cpu) in measure(name, args.steps).items():
      print(f'| {name} | {row} | {wall:.3f} | {cpu:.3f} |', flush=True)


if __name__ == '__main__':
  main()
