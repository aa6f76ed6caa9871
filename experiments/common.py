"""What every experiment's `main` shares, so an experiment file is its config and a few
lines of wiring: the data sources of `config.data`, the augmentation policy, the
normalisation of `config.preprocess`, the run's clock, stopping early and the report
file (its tables: report/tables.py).

Config blocks this module reads:
  config.data        the data source's own arguments only (`source`, `data_dir`, ...),
                     passed to data.sources.build_source as they are;
  config.preprocess  how images reach the model: `mean`, `std` (per channel or one
                     number) of the normalisation the step does (train/steps.py);
  config.augment     an augmentation policy string (data/augment.py), '' for none;
  config.augment_on  where it runs: 'host' (default: per example in tf.data, on the
                     CPU cores, overlapping the step) or 'device' (batched JAX ops in
                     the jitted step, data/augment_jax.py: for an accelerator the
                     host cores cannot feed; other random draws than 'host');
  config.train_examples / config.train_repeats (optional): the first N training
                     examples / the training set repeated, each copy augmented anew.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from data import pipeline
from data.sources import Source, build_source
from models import build_model
from report import instance as instance_report
import tasks.evaluators  # noqa: F401  pylint: disable=unused-import  (config.evals types)
from tasks.instance import evaluation
from tasks.instance.task import instance_task
from train import distributed
from train.loop import train_and_evaluate
from train.metric_writer import read_metrics


def sources(config, eval_split: str, subset_seed: Optional[int] = None
            ) -> tuple[Source, Source]:
  """(training source, `eval_split` source) from `config.data`. With `subset_seed`, the
  `train_examples` are the first of a seeded shuffle (a class-balanced subset of a
  source sorted by class), not the first of the source."""
  data_config = config.data.to_dict()
  train_source = build_source(data_config, 'train')
  eval_source = build_source(data_config, eval_split)
  count = config.get('train_examples', 0)
  if count:
    count = min(count, train_source.num_examples)
    dataset = train_source.records
    if subset_seed is None:
      dataset = dataset.take(count)
    else:  # cached: else every epoch reads the whole source to shuffle it
      dataset = dataset.shuffle(train_source.num_examples, seed=subset_seed,
                                reshuffle_each_iteration=False).take(count).cache()
    train_source = dataclasses.replace(train_source, records=dataset, num_examples=count)
  repeats = config.get('train_repeats', 1)
  if repeats > 1:
    train_source = dataclasses.replace(
        train_source, records=train_source.records.repeat(repeats),
        num_examples=train_source.num_examples * repeats)
  return train_source, eval_source


def augment_fns(config, fill: Optional[Mapping[str, Any]] = None, **options
                ) -> dict[str, Any]:
  """train_and_evaluate's `augment_fn` and `device_augment_fn`: the policy of
  `config.augment` built once for the path `config.augment_on` names (the other None;
  both None for ''). `fill` per feature, e.g. the mask's ignore id for pixels a
  geometric op uncovers; `options` of data.augment.build_policy, e.g.
  drop_mode='invalidate'."""
  fns = {'augment_fn': None, 'device_augment_fn': None}
  if not config.augment:
    return fns
  fill = dict(fill) if fill else None
  # pylint: disable=g-import-not-at-top  (built on use: tf ops / jax ops)
  if config.get('augment_on', 'host') == 'device':
    from data import augment_jax
    fns['device_augment_fn'] = augment_jax.build_device_policy(config.augment, fill=fill,
                                                               **options)
  else:
    from data import augment
    fns['augment_fn'] = augment.build_policy(config.augment, fill=fill, **options)
  return fns


def normalization(config) -> dict[str, tuple[float, ...]]:
  """{'mean': ..., 'std': ...} of `config.preprocess`, as tuples (a Task's arguments)."""
  return {'mean': tuple(float(v) for v in np.ravel(config.preprocess.mean)),
          'std': tuple(float(v) for v in np.ravel(config.preprocess.std))}


def first_examples(source: Source, count: Optional[int] = None) -> dict[str, np.ndarray]:
  """The first `count` (all) examples of `source` stacked into NumPy arrays."""
  count = source.num_examples if count is None else min(count, source.num_examples)
  return next(pipeline.as_numpy(source.dataset.take(count).batch(count)))


def should_report(results: Mapping[str, Any] | Any) -> bool:
  """False (after saying why) when a run was preempted, or on processes other than 0:
  every process trains, process 0 alone analyses and reports."""
  runs = results.values() if isinstance(results, Mapping) else [results]
  if any(r.preempted for r in runs):
    print('preempted: rerun the same command to resume from the last checkpoint.')
    return False
  return distributed.is_main_process()


class Clock:
  """The whole run's wall time and this process's CPU time since it was made."""

  def __init__(self):
    self._wall, self._cpu = time.perf_counter(), self._cpu_seconds()

  @staticmethod
  def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system

  @property
  def wall_seconds(self) -> float:
    return time.perf_counter() - self._wall

  def summary(self) -> str:
    # On a shared machine the wall time depends on the other processes; the CPU time
    # this process used does not.
    return (f'Whole run: {self.wall_seconds / 60:.1f} min wall, '
            f'{self._cpu_seconds() - self._cpu:,.0f} CPU seconds (user + system) on '
            f'{os.cpu_count()} cores.')


def write_report(workdir: str, title: str, sections: Sequence[str]) -> str:
  """Writes `# title` and the sections (markdown) to <workdir>/report.md; returns it."""
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n\n'.join([f'# {title}', *sections]) + '\n')
  print(f'report: {path}')
  return path


def train_mask_rcnn(config, workdir: str, train_source: Source, eval_source: Source,
                    init_fn=None):
  """(result, task) of the instance experiments' one training run: the Mask R-CNN of
  `config.model` on the sources' classes (background excluded), `config.loss_weights`
  (the mask term off for a source without masks: a detector only), and augmentation
  that keeps the padded instance count static (a dropped instance is flagged)."""
  model = build_model({**config.model.to_dict(),
                       'num_classes': len(train_source.class_names) - 1})
  weights = config.loss_weights.to_dict()
  if not train_source.metadata.get('has_masks', True):
    weights['mask'] = 0.0
  task = instance_task(**normalization(config), loss_weights=weights)
  result = train_and_evaluate(config, workdir, model=model, train_source=train_source,
                              eval_source=eval_source, task=task, init_fn=init_fn,
                              **augment_fns(config, drop_mode='invalidate'))
  return result, task


def report_mask_rcnn(config, workdir: str, title: str, result, task, train_source: Source,
                     eval_source: Source, clock: Clock) -> str:
  """The instance experiments' report.md: detections on `config.num_shown` images, the
  COCO tables of the last evaluation, the resize ceiling, curves (report/instance.py)."""
  shown = evaluation.predict_source(result.state, eval_source, inputs_fn=task.inputs_fn,
                                    batch_size=config.eval_batch_size,
                                    max_examples=config.num_shown)
  ceiling = (evaluation.resize_ceiling(eval_source)
             if eval_source.metadata.get('has_masks', True) else None)
  sections = instance_report.mask_rcnn_sections(
      workdir, title, config, result, read_metrics(workdir), shown, ceiling, train_source,
      eval_source, clock)
  return write_report(workdir, f'Instance segmentation: Mask R-CNN on {title}', sections)
