"""Metric logging: TensorBoard event files (tf.summary) plus a `metrics.jsonl` log."""
from __future__ import annotations

import json
import os
import sys
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
      self._end_a_torn_line()

  def _end_a_torn_line(self) -> None:
    """A previous run cut short mid-line: start on a new line, so only that line is lost."""
    if os.path.exists(self.jsonl_path) and os.path.getsize(self.jsonl_path):
      with open(self.jsonl_path, 'rb+') as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b'\n':
          f.write(b'\n')

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
  """{name: [(step, value), ...]} sorted by step, the last write of a step winning.

  A line cut short (power loss or a full disk mid-append; the next run appends after
  it) is skipped with a warning: the report loses one logging interval, not the run.
  """
  path = os.path.join(workdir, 'metrics.jsonl')
  by_name: dict[str, dict[int, float]] = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        print(f'warning: {path} line {number} is not complete JSON (a write cut short); '
              'skipped.', file=sys.stderr)
        continue
      step = record.pop('step')
      for name, value in record.items():
        by_name.setdefault(name, {})[step] = value
  return {name: sorted(values.items()) for name, values in by_name.items()}
