"""The one training loop: every experiment calls `train_and_evaluate` with its own Task.

Auto-resume: pointed at a workdir with checkpoints, the loop restores the latest one
(step, params, optimizer and BatchNorm state, rng) and continues from the same data
position: the epoch is `step // steps_per_epoch` and the batches already seen in it
are skipped, which reproduces the uninterrupted run because each epoch's order
depends only on (seed, epoch).

Devices: one data-parallel path for 1 device, N local devices and many hosts. The
step is `jax.jit`ted over a `Mesh` (train/mesh.py) with the batch sharded on 'data'
and the state replicated; each process feeds its own rows of every global batch
(tf.data sharded by position), and only process 0 writes metrics and progress while
orbax writes checkpoints collectively. Replicated checkpoints restore onto any device
count. See docs/distributed.md.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from data import pipeline
from data.sources import Source
from errors import ConfigError, UserError
from train import (checkpoint, config_check, distributed, evaluators, optimizer,
                   run_record, steps)
from train import mesh as mesh_lib
from train.metric_writer import MetricWriter
from train.state import InitFn, TrainState, count_params, create_train_state
from train.task import Task


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  eval_history: list[dict[str, float]]  # one entry per evaluation, with 'epoch', 'step'
  train_seconds: float                  # wall time in train steps, over all resumed runs
  compile_seconds: float                # first step of this process (compilation)
  steps_per_epoch: int
  num_params: int
  preempted: bool = False
  # Training seconds at each checkpoint's step, over all resumed runs.
  seconds_by_step: dict[int, float] = dataclasses.field(default_factory=dict)
  # Each `--allow_config_change` resume: its step and the fields that changed.
  config_changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def final_eval(self) -> dict[str, float]:
    return self.eval_history[-1] if self.eval_history else {}

  def images_per_second(self, batch_size: int) -> float:
    """Training images per second of training time; NaN (not a division by zero) if
    no training time was recorded."""
    if self.train_seconds <= 0:
      return float('nan')
    return int(self.state.step) * batch_size / self.train_seconds


class NonFiniteLossError(UserError, FloatingPointError):
  """The loss diverged (lower the learning rate); the last good checkpoint is kept."""


class _PreemptionFlag:
  """SIGTERM / SIGINT set a flag; the loop saves at the next step boundary and stops.

  With several processes every host must stop at the same step, or the others wait
  forever in the step's all-reduce: there JAX's preemption service (started by
  `jax.distributed.initialize`, it catches SIGTERM) agrees on the step, and no Python
  handler is installed.
  """

  def __init__(self):
    self.requested = False
    self._previous = {}
    self._multi_process = jax.process_count() > 1

  def __enter__(self):
    if self._multi_process:
      return self
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handlers, nothing to restore
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    print(f'signal {signum}: saving a checkpoint at the next step boundary.', file=sys.stderr)
    self.requested = True

  def reached(self, step: int) -> bool:
    """Called after every step (on every process): stop and save after `step`?"""
    if self._multi_process and jax.distributed.is_initialized():
      try:
        self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # the preemption service is disabled
        pass
    return self.requested

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _with_compute_dtype(model: nn.Module, compute_dtype: Optional[str]) -> nn.Module:
  """The model computing in `compute_dtype` (e.g. 'bfloat16'); parameters stay float32."""
  if not compute_dtype:
    return model
  if 'dtype' not in {f.name for f in dataclasses.fields(model)}:
    raise ConfigError(f'config.compute_dtype={compute_dtype!r}: model '
                      f'{type(model).__name__} has no `dtype` field to set; add one '
                      '(see models/cnn.py) or leave compute_dtype empty.')
  return model.clone(dtype=jnp.dtype(compute_dtype))


def _create_state(model: nn.Module, tx, input_shape: tuple[int, ...], seed: int,
                  mesh, init_fn=None) -> TrainState:
  """Initialises the state directly replicated over the mesh (every process agrees)."""
  try:
    return jax.jit(lambda: create_train_state(model, tx, input_shape,
                                              jax.random.PRNGKey(seed), init_fn),
                   out_shardings=mesh_lib.replicated(mesh))()
  except ValueError as e:  # a model's own shape check, or init_fn's (e.g. a weights file)
    raise ConfigError(f'model {type(model).__name__} could not be initialised for the '
                      f'training images {list(input_shape[1:])}: {e}') from e


def _check_augment_path(config: Mapping[str, Any], augment_fn, device_augment_fn) -> None:
  """The augmentation given must be the one `config.augment_on` names (never both)."""
  path = config.get('augment_on', 'host')
  wrong = device_augment_fn if path == 'host' else augment_fn
  if wrong is not None:
    given = 'device_augment_fn' if path == 'host' else 'augment_fn'
    raise ConfigError(f'config.augment_on={path!r} but train_and_evaluate was given '
                      f'{given} (the other path); build both with '
                      'experiments.common.augment_fns(config).')


def train_and_evaluate(config: Mapping[str, Any], workdir: str, *, model: nn.Module,
                       train_source: Source, eval_source: Source, task: Task,
                       augment_fn: Optional[pipeline.AugmentFn] = None,
                       device_augment_fn: Optional[steps.DeviceAugmentFn] = None,
                       preprocess_fn: Optional[Callable] = None,
                       max_steps: Optional[int] = None,
                       devices: Optional[Sequence[jax.Device]] = None,
                       init_fn: Optional[InitFn] = None) -> TrainResult:
  """Trains `model` for `config.num_epochs` epochs, evaluating and checkpointing each epoch.

  config fields: seed, batch_size, eval_batch_size, num_epochs, optimizer (see
  train.optimizer), log_every_steps, and optionally shuffle_buffer, progress_bar,
  eval_every_epochs, evals (train/evaluators.py: run with the evaluations), compute_dtype
  ('bfloat16': the model computes in bf16, parameters and loss stay float32) and
  distributed (see train.distributed).
  `batch_size` is the global batch: divisible by the device count of all processes.
  `max_steps` stops early (after saving) at that global step: tests use it to
  simulate an interruption. `devices` (default: all) span the data-parallel mesh.
  `init_fn` (train.state.create_train_state) sets the starting variables, e.g. ImageNet
  weights; a resumed run still calls it for the restore template, then restores.
  Augmentation: `augment_fn` runs per example in tf.data (config.augment_on 'host', the
  default); `device_augment_fn(batch, key)` runs on the batch inside the jitted step
  ('device'; key: train.steps.augment_key). The config names which one may be given.
  """
  config_check.check_config(config)
  _check_augment_path(config, augment_fn, device_augment_fn)
  distributed.initialize(config.get('distributed'))
  mesh = mesh_lib.make_mesh(devices)
  is_main = distributed.is_main_process()
  batch_size = config['batch_size']
  steps_per_epoch = train_source.num_examples // batch_size
  if steps_per_epoch == 0:
    raise ConfigError(f'config.batch_size={batch_size} is larger than the training set '
                      f'({train_source.num_examples} examples).')
  mesh_lib.check_batch_size(batch_size, mesh)
  shard_index, num_shards = mesh_lib.local_rows(batch_size, mesh)
  eval_batch_size = mesh_lib.round_up_to_devices(config['eval_batch_size'], mesh)
  num_classes = len(train_source.class_names)
  model = _with_compute_dtype(model, config.get('compute_dtype'))
  context = evaluators.EvalContext(eval_source=eval_source, batch_size=eval_batch_size,
                                   task=task, workdir=workdir, mesh=mesh,
                                   preprocess_fn=preprocess_fn)
  # Built before any work, so a bad config.evals entry stops the run at once.
  # The task's exact sums first (unprefixed: 'loss', 'accuracy', ...), then config.evals.
  named_evaluators = {'': evaluators.Scheduled(evaluators.sums_evaluator(context)),
                      **evaluators.build_evaluators(config.get('evals'), context)}
  num_epochs = config['num_epochs']
  total_steps = num_epochs * steps_per_epoch
  tx, schedule = optimizer.build_optimizer(config['optimizer'], total_steps)
  # The restore template: orbax puts the saved arrays onto this mesh, whatever the
  # device count they were saved from.
  state = _create_state(model, tx, (1,) + tuple(train_source.image_shape), config['seed'],
                        mesh, init_fn)

  # What defines this run, saved with every checkpoint and compared on resume.
  run = run_record.describe(config, train_examples=train_source.num_examples,
                            image_shape=train_source.image_shape,
                            class_names=train_source.class_names, state=state)
  allow_change = bool(config.get('allow_config_change', False))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'))
  restored = ckpt.restore_newest(state, lambda saved, saved_step: run_record.check_resume(
      saved, run, ckpt.directory, saved_step, allow_change))
  progress = {'train_seconds': 0.0, 'eval_history': [], 'seconds_by_step': {}}
  config_changes: list[dict[str, Any]] = []
  if restored is not None:
    state, progress = restored.state, restored.record['progress']
    config_changes = restored.record.get('config_changes', [])
    changed = run_record.check_resume(restored.record, run, ckpt.directory, restored.step,
                                      allow_change=True)
    if changed:
      config_changes.append({'step': restored.step, 'changed': changed})
    if is_main:
      print(f'resuming from the checkpoint at step {restored.step} in {workdir}'
            + (f' under a changed config (allowed): {"; ".join(changed)}' if changed else ''),
            file=sys.stderr)

  replicated, sharded = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  train_fn = jax.jit(functools.partial(steps.train_step, loss_fn=task.loss_fn,
                                       inputs_fn=task.inputs_fn,
                                       augment_fn=device_augment_fn),
                     in_shardings=(replicated, sharded), out_shardings=replicated,
                     donate_argnums=(0,))
  writer = MetricWriter(workdir, enabled=is_main)
  log_every = config.get('log_every_steps', 100)
  history = progress['eval_history']
  train_seconds = progress['train_seconds']
  seconds_by_step = {int(k): v for k, v in progress['seconds_by_step'].items()}
  compile_seconds = 0.0
  step = int(state.step)
  stop_at = total_steps if max_steps is None else min(max_steps, total_steps)
  bar = tqdm(total=total_steps, initial=step,
             disable=not (is_main and config.get('progress_bar', True)),
             desc=workdir.rstrip('/').split('/')[-1], mininterval=2.0, file=sys.stderr)

  def run_eval(epoch: int):
    results = evaluators.run_evaluators(named_evaluators, state, epoch,
                                        final=step == total_steps)
    scalars = {k: v for k, v in results.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    writer.write_scalars(step, {f'eval/{k}': v for k, v in scalars.items()})
    history.append({'epoch': epoch, 'step': step, **results})
    if is_main:
      bar.write(f'epoch {epoch}: ' + ', '.join(
          f'{k} {v:.4f}' for k, v in scalars.items() if k != 'count' and '/' not in k))

  def log_train_metrics(pending_metrics: list[dict]):
    fetched = jax.device_get(pending_metrics)  # one host sync per log interval
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    if not np.isfinite(means['loss']):
      last = ckpt.latest_step()
      raise NonFiniteLossError(
          f'non-finite training loss ({means["loss"]}) in the {len(fetched)} steps up to '
          f'step {step}; stopping. Lower config.optimizer.learning_rate (or clip '
          'gradients) and rerun' + (
              f'; the last good checkpoint (step {last}) in {ckpt.directory} is kept (add '
              '--allow_config_change to continue from it).' if last is not None
              else '; no checkpoint was saved yet.'))
    writer.write_scalars(step, {**{f'train/{k}': v for k, v in means.items()},
                                'train/learning_rate': schedule(step - 1)})
    bar.set_postfix(loss=f'{means["loss"]:.4f}')

  def save():
    # The progress is part of the checkpoint: one commit, never out of step with it.
    seconds_by_step[step] = train_seconds
    ckpt.save(state, {**run, 'config_changes': config_changes, 'progress': {
        'step': step, 'train_seconds': train_seconds, 'eval_history': history,
        'seconds_by_step': {str(k): v for k, v in seconds_by_step.items()}}})

  pending: list[dict] = []
  preempted = False
  with _PreemptionFlag() as preemption:
    while step < stop_at and not preempted:
      epoch, skip = divmod(step, steps_per_epoch)
      batches = pipeline.as_numpy(pipeline.train_batches(
          train_source.records, batch_size=batch_size, seed=config['seed'], epoch=epoch,
          augment_fn=augment_fn, preprocess_fn=preprocess_fn, skip_batches=skip,
          shuffle_buffer=config.get('shuffle_buffer'), num_shards=num_shards,
          shard_index=shard_index, decode_fn=train_source.decode))
      segment_start = time.perf_counter()
      # Exactly the epoch's remaining steps, so every process takes the same number.
      for _, local_batch in zip(range(steps_per_epoch - skip), batches):
        if task.check_batch is not None:
          task.check_batch(local_batch, num_classes,
                           f'training batch of step {step + 1} (epoch {epoch})')
        batch = mesh_lib.global_batch(local_batch, mesh, batch_size)
        if compile_seconds == 0.0:
          # The first step of this process compiles; timed apart from training.
          compile_start = time.perf_counter()
          state, metrics = jax.block_until_ready(train_fn(state, batch))
          compile_seconds = time.perf_counter() - compile_start
          segment_start += compile_seconds
        else:
          state, metrics = train_fn(state, batch)
        pending.append(metrics)
        step += 1
        bar.update(1)
        if step % log_every == 0 or step % steps_per_epoch == 0 or step == stop_at:
          log_train_metrics(pending)
          pending = []
        if preemption.reached(step) or step == stop_at:
          break
      jax.block_until_ready(state)
      train_seconds += time.perf_counter() - segment_start
      epoch_done = step % steps_per_epoch == 0
      if epoch_done:
        epoch_number = step // steps_per_epoch
        if epoch_number % config.get('eval_every_epochs', 1) == 0 or step == total_steps:
          run_eval(epoch_number)
      if epoch_done or step == stop_at or preemption.requested:
        if pending:
          log_train_metrics(pending)
          pending = []
        save()
      preempted = preemption.requested
  bar.close()
  ckpt.close()
  return TrainResult(state=mesh_lib.to_local(state), eval_history=history,
                     train_seconds=train_seconds, compile_seconds=compile_seconds,
                     steps_per_epoch=steps_per_epoch,
                     num_params=count_params(state.params), preempted=preempted,
                     seconds_by_step=seconds_by_step, config_changes=config_changes)
