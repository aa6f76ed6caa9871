"""Every experiment's jitted train step on an accelerator, in float32 and bfloat16, on
real batches made here: a device check that needs no TensorFlow, TFDS or ml_collections.

Two modes:
  --prepare (here, with TensorFlow): for each entry of benchmarks/experiment_inputs.py,
      one training batch from the experiment's real input path (its source, augmentation
      policy and batch size, data.pipeline.train_batches as the loop calls it) into
      benchmarks/gpu_batches/<key>.npz (uint8 images, compressed), and the step's plain
      values (model config, optimizer config, task arguments, normalisation, batch size,
      issue 14's H100 rates) into benchmarks/gpu_batches/<key>.json.
  --run (on the device; imports only numpy, jax, flax, optax and models/, train/steps,
      train/state, train/optimizer, tasks/*/task.py): builds the model, the optimizer
      with the experiment's schedule length, the state and the step as train/loop.py
      does (`jax.jit(train_step, donate_argnums=(0,))`, `model.clone(dtype=...)` for the
      compute dtype), puts the batch on the device once and times `--steps` steps,
      median of `--repeats` repeats (block_until_ready), per model and dtype; prints a
      markdown table (images/s, and the issue's H100 rate for comparison).

  PYTHONPATH=. python benchmarks/gpu_step.py --prepare [--models mlp,cnn,...]
  PYTHONPATH=. python benchmarks/gpu_step.py --run [--models ...] [--steps 50]

The batches come from ../shared/data, so they are not committed (benchmarks/gpu_batches/
is in .gitignore): prepare them here, then carry the folder to the device machine (the
device tool's `carry=['benchmarks/gpu_batches']`; ~6 MiB for all eight models).

Augmentation: the batches carry the host policy's output (the loop's default path).
When an experiment trains with the augmentation inside the step (`augment_on='device'`,
issue 14 item 3: cifar10's `gpu` config), the saved batch is unaugmented and the step
applies the policy (data/augment_jax.py), as in training; the table says which rows
include it.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from typing import Any, Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
BATCH_DIR = os.path.join(REPO, 'benchmarks', 'gpu_batches')
DEFAULT_MODELS = ('mlp,cnn,airbench,resnet20,unet_camvid,unet_isbi,mask_rcnn_coco128,'
                  'mask_rcnn_shapes')


# ----- --prepare (TensorFlow side) -----

def prepare(keys: list[str], directory: str) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from benchmarks import experiment_inputs  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  for key in keys:
    built = experiment_inputs.build(key)
    batch = next(iter(experiment_inputs.train_batches(built).as_numpy_iterator()))
    np.savez_compressed(os.path.join(directory, f'{key}.npz'), **batch)
    spec = {**built.spec, 'image_shape': list(batch['image'].shape[1:]),
            'arrays': {k: [str(v.dtype), list(v.shape)] for k, v in batch.items()}}
    with open(os.path.join(directory, f'{key}.json'), 'w') as f:
      json.dump(spec, f, indent=1, sort_keys=True)
    size = os.path.getsize(os.path.join(directory, f'{key}.npz'))
    print(f'{key}: {spec["arrays"]}, {size / 2**20:.2f} MiB', flush=True)


# ----- --run (no TensorFlow) -----

def load(key: str, directory: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  with open(os.path.join(directory, f'{key}.json')) as f:
    spec = json.load(f)
  with np.load(os.path.join(directory, f'{key}.npz')) as data:
    batch = {k: data[k] for k in data.files}
  return spec, batch


def build_task(spec: dict[str, Any]):
  """The experiment's Task from the spec's plain values (as experiments/*.py build it)."""
  task, norm = spec['task'], spec['normalization']
  mean, std = tuple(norm['mean']), tuple(norm['std'])
  if task['kind'] == 'classification':
    from tasks.classification.task import classification_task  # pylint: disable=g-import-not-at-top
    return classification_task(task['label_smoothing'], mean=mean, std=std)
  if task['kind'] == 'segmentation':
    from tasks.segmentation.task import segmentation_task  # pylint: disable=g-import-not-at-top
    return segmentation_task(task['class_names'], task['ce_weight'], task['dice_weight'],
                             task['class_weights'], mean=mean, std=std)
  if task['kind'] == 'instance':
    from tasks.instance.task import instance_task  # pylint: disable=g-import-not-at-top
    return instance_task(mean, std, loss_weights=task['loss_weights'])
  raise ValueError(f'benchmarks/gpu_step.py: task kind {task["kind"]!r} in the spec of '
                   f'{spec["key"]}; expected classification, segmentation or instance.')


def build_model(spec: dict[str, Any], dtype: str):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  config = dict(spec['model'])
  # JSON turned tuples into lists; the modules' fields are hashed by flax.
  config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
  model = models.build_model(config)
  if spec.get('flip_averaged') is not None:
    from models.flip_averaged import FlipAveraged  # pylint: disable=g-import-not-at-top
    model = FlipAveraged(model, enabled=spec['flip_averaged'])
  if dtype != 'float32':  # as train/loop.py's _with_compute_dtype
    model = model.clone(dtype=jnp.dtype(dtype))
  return model


def device_augment_fn(spec: dict[str, Any]) -> Optional[Any]:
  """The experiment's policy as batched JAX ops (data/augment_jax.py) when it trains with
  `augment_on='device'`, else None (the saved batch then carries the host's augmentation
  or none). JAX only: data.augment_jax imports no TensorFlow."""
  if spec.get('augment_on', 'host') != 'device' or not spec['augment']:
    return None
  from data import augment_jax  # pylint: disable=g-import-not-at-top
  return augment_jax.build_device_policy(spec['augment'], **spec.get('augment_options', {}))


def time_step(spec: dict[str, Any], batch: dict[str, np.ndarray], dtype: str, steps: int,
              repeats: int) -> dict[str, Any]:
  """Median images/s of `steps` jitted train steps on the device-resident batch."""
  import jax  # pylint: disable=g-import-not-at-top
  from train import optimizer, steps as train_steps  # pylint: disable=g-import-not-at-top
  from train.state import create_train_state  # pylint: disable=g-import-not-at-top
  task = build_task(spec)
  model = build_model(spec, dtype)
  total_steps = max(1, spec['num_epochs'] * spec['steps_per_epoch'])
  tx, _ = optimizer.build_optimizer(spec['optimizer'], total_steps)
  input_shape = (1,) + tuple(spec['image_shape'])
  state = jax.jit(lambda: create_train_state(model, tx, input_shape, jax.random.PRNGKey(0)))()
  augment = device_augment_fn(spec)
  # As the loop builds it: the device augmentation inside the jitted step, keyed by step.
  step_fn = functools.partial(train_steps.train_step, loss_fn=task.loss_fn,
                              inputs_fn=task.inputs_fn, augment_fn=augment)
  step = jax.jit(step_fn, donate_argnums=(0,))
  device_batch = jax.device_put(batch)
  start = time.perf_counter()
  state, metrics = jax.block_until_ready(step(state, device_batch))
  compile_s = time.perf_counter() - start
  loss = float(metrics['loss'])
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, device_batch)
    jax.block_until_ready((state, metrics))
    rates.append(steps * spec['batch_size'] / (time.perf_counter() - start))
  return {'images_per_s': statistics.median(rates), 'all': rates, 'compile_s': compile_s,
          'first_loss': loss, 'last_loss': float(metrics['loss']),
          'device_augment': augment is not None}


def run(keys: list[str], directory: str, dtypes: list[str], steps: int, repeats: int) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  rows = []
  for key in keys:
    spec, batch = load(key, directory)
    cells = [spec['title']]
    notes = []
    for dtype in dtypes:
      try:
        r = time_step(spec, batch, dtype, steps, repeats)
      except Exception as e:  # pylint: disable=broad-except  (one model's failure, not all)
        cells.append('failed')
        notes.append(f'{dtype}: {type(e).__name__}: {str(e)[:160]}')
        continue
      cells.append(f'{r["images_per_s"]:,.0f}')
      notes.append(f'{dtype}: compile {r["compile_s"]:.1f} s, loss {r["first_loss"]:.3g} -> '
                   f'{r["last_loss"]:.3g}, repeats '
                   + ', '.join(f'{x:,.0f}' for x in r['all'])
                   + ('' if not spec['augment'] else
                      '; device augmentation in the step' if r['device_augment'] else
                      '; host-augmented batch (no device augmentation)'))
      print(key, dtype, r, file=sys.stderr, flush=True)
    h100 = spec.get('h100')
    cells.append('' if not h100 else ' / '.join(f'{x:,.0f}' for x in h100))
    cells.append('; '.join(notes))
    rows.append(cells)
  headers = (['model (config of the experiment)'] + [f'{d} img/s' for d in dtypes]
             + ['issue 14 H100 float32 / bfloat16', 'notes'])
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
  lines += ['| ' + ' | '.join(c.replace('|', '/') for c in row) + ' |' for row in rows]
  intro = (f'Device: {device.device_kind} ({device.platform}); jax {jax.__version__}; '
           f'{steps} steps per repeat, median of {repeats} repeats, one real batch '
           f'(benchmarks/gpu_batches) resident on the device; '
           f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.')
  return intro + '\n\n' + '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument('--prepare', action='store_true')
  mode.add_argument('--run', action='store_true')
  parser.add_argument('--models', default=DEFAULT_MODELS)
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--directory', default=BATCH_DIR)
  parser.add_argument('--output', default='', help='also write the table to this file')
  args = parser.parse_args(argv)
  keys = [k for k in args.models.split(',') if k]
  if args.prepare:
    prepare(keys, args.directory)
    return
  table = run(keys, args.directory, args.dtypes.split(','), args.steps, args.repeats)
  print(table, flush=True)
  if args.output:
    with open(args.output, 'w') as f:
      f.write(table + '\n')


if __name__ == '__main__':
  main()
