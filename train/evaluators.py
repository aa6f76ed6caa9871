"""Evaluators named in the config, run by the loop at every evaluation and at the end.

    config.evals = {'shift': dict(type='shift_robustness', shifts=(0, 1, 2, 3, 4))}

Each entry builds one evaluator: `EVALUATORS.get(type)(context, **the other fields)`
returns a function `state -> results`, a dict of numbers (or JSON-able lists and dicts
of numbers, e.g. a confusion matrix). The loop stores the results of `<name>` as
`<name>/<key>` in the evaluation history (saved in every checkpoint, so a resumed or
finished run keeps them) and writes the scalars to metrics.jsonl / TensorBoard as
`eval/<name>/<key>`. The task's exact sums (train/task.py) are the first evaluator
of every run (`sums_evaluator`), unprefixed. Task packages register their evaluators
when imported; `tasks/evaluators.py` imports them all, in one place. The entries'
types and schedules are checked with the rest of the config (train/config_check.py).

The idea is big_vision's `config.evals`: the loop knows when to evaluate, each
evaluator knows what.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh

from data import pipeline
from data.sources import Source
from errors import ConfigError
from registry import Registry
from train import evaluate, steps
from train import mesh as mesh_lib
from train.state import TrainState
from train.task import Task

EVALUATORS = Registry('evaluator')
Evaluator = Callable[[TrainState], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What an evaluator may use besides the state it is given."""
  eval_source: Source
  batch_size: int  # per batch, rounded up to a multiple of the device count
  task: Task       # its inputs_fn feeds the model exactly as in training
  workdir: str
  mesh: Optional[Mesh] = None  # the loop's data-parallel mesh (None: jit on one device)
  preprocess_fn: Optional[Callable] = None  # a tf.data map before batching, if any


# An evaluation set whose batches take at most this many bytes on the host is read
# through tf.data once and then kept: the main job's 20 evaluations of Fashion-MNIST's
# test set (7.8 MB) each spent ~0.4 s building and draining the pipeline.
KEEP_BATCHES_BYTES = 256 << 20


def sums_evaluator(context: EvalContext) -> Evaluator:
  """The task's exact evaluation: `sums_fn` over every example of the evaluation
  source, added up in int64 / float64 on the host, then `means_fn` once. Every process
  reads the whole evaluation set and feeds its rows of each batch, padded ('valid'
  False) up to a multiple of the device count. The batches are read once and kept
  when small (`KEEP_BATCHES_BYTES`): an evaluation source is read in order, unaugmented."""
  task, mesh, batch_size = context.task, context.mesh or mesh_lib.make_mesh(), context.batch_size
  replicated, sharded = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  eval_fn = jax.jit(functools.partial(steps.eval_step, sums_fn=task.sums_fn,
                                      inputs_fn=task.inputs_fn),
                    in_shardings=(replicated, sharded), out_shardings=replicated)
  kept: list[list[dict[str, np.ndarray]]] = []

  def host_batches() -> Iterator[dict[str, np.ndarray]]:
    if kept:
      yield from kept[0]
      return
    batches: Optional[list[dict[str, np.ndarray]]] = []
    size = 0
    for batch in pipeline.as_numpy(pipeline.eval_batches(
        context.eval_source.dataset, batch_size=batch_size,
        preprocess_fn=context.preprocess_fn)):
      if batches is not None:
        size += sum(np.asarray(v).nbytes for v in batch.values())
        if size <= KEEP_BATCHES_BYTES:
          batches.append(batch)
        else:
          batches = None
      yield batch
    if batches is not None:  # the whole set was read (a partial read keeps nothing)
      kept.append(batches)

  def evaluate_sums(state: TrainState) -> dict[str, Any]:
    batches = (mesh_lib.global_batch(mesh_lib.local_slice(b, batch_size, mesh), mesh,
                                     batch_size) for b in host_batches())
    return task.means_fn(evaluate.accumulate(eval_fn, state, batches))
  return evaluate_sums


@dataclasses.dataclass(frozen=True)
class Scheduled:
  """An evaluator and the epochs it runs at: every `every_epochs`-th evaluation epoch
  (1: every evaluation) and always at the end of training (0: only there)."""
  evaluator: Evaluator
  every_epochs: int = 1

  def due(self, epoch: int, final: bool) -> bool:
    return final or (self.every_epochs > 0 and epoch % self.every_epochs == 0)

  def __call__(self, state: TrainState) -> dict[str, Any]:
    return self.evaluator(state)


def build_evaluators(evals: Mapping[str, Mapping[str, Any]], context: EvalContext
                     ) -> dict[str, Scheduled]:
  """{name: scheduled evaluator} for `config.evals` (checked by train/config_check.py);
  besides `type`, an entry may set `every_epochs` (see `Scheduled`); the other fields
  are the evaluator's arguments, and a wrong one is a ConfigError naming the entry."""
  built = {}
  for name, fields in (evals or {}).items():
    fields = dict(fields)
    kind = fields.pop('type')
    every_epochs = fields.pop('every_epochs', 1)
    try:
      built[name] = Scheduled(EVALUATORS.get(kind)(context, **fields), every_epochs)
    except TypeError as e:
      raise ConfigError(f'config.evals.{name} ({kind}): {e}') from e
  return built


def run_evaluators(evaluators: Mapping[str, Scheduled], state: TrainState,
                   epoch: int = 0, final: bool = True) -> dict[str, Any]:
  """The results of the evaluators due at `epoch` (all if `final`), flat:
  {'<name>/<key>': value}; the evaluator named '' is unprefixed."""
  results = {}
  for name, evaluator in evaluators.items():
    if not evaluator.due(epoch, final):
      continue
    for key, value in evaluator(state).items():
      results[f'{name}/{key}' if name else key] = _jsonable(value)
  return results


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  array = np.asarray(value)
  if array.ndim:
    return array.tolist()
  return array.item()
