"""Metric logging: TensorBoard event files (tf.summary) plus a `metrics.jsonl` log."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
import tensorflow as tf


class MetricWriter:
  """Writes scalars per step to `workdir/tensorboard/` and appends to `workdir/metrics.jsonl`.

  A resumed run appends; steps it repeats appear twice in the JSON log and
  `read_metrics` keeps the last value written for each (step, name).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    with self._tb.as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, value, step=step)
    self._tb.flush()
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps({'step': int(step), **scalars}) + '\n')


def read_metrics(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """{name: [(step, value), ...]} sorted by step, the last write of a step winning."""
  path = os.path.join(workdir, 'metrics.jsonl')
  by_name: dict[str, dict[int, float]] = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      step = record.pop('step')
      for name, value in record.items():
        by_name.setdefault(name, {})[step] = value
  return {name: sorted(values.items()) for name, values in by_name.items()}
