"""The Task: everything the one loop (train/loop.py) needs to know about a task.

A task is a handful of pure functions over batches (dicts of arrays); the loop calls
them and knows nothing else of classification, segmentation or detection:
  loss_fn(outputs, batch) -> (loss, metrics)   the training loss and per-step metrics;
  sums_fn(outputs, batch) -> sums              exact sums over a batch's valid examples;
  means_fn(total sums) -> metrics              the evaluation metrics of the whole set;
  inputs_fn(batch) -> model inputs             e.g. normalised images (train/steps.py);
  check_batch(batch, num_classes, where)       raises on a bad training batch (host,
                                               before the step), naming it by `where`.
Task packages (tasks/<name>/) build one with their own functions; see the README's
"Adding a task". Evaluations beyond the sums (COCO AP, shift robustness, ...) are
evaluators named in the config (train/evaluators.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import numpy as np

from train import evaluate, steps

MeansFn = Callable[[Mapping[str, np.ndarray]], dict]
# (host batch of this process, number of classes of the training source, where) -> None
CheckBatchFn = Callable[[Mapping[str, np.ndarray], int, str], None]


@dataclasses.dataclass(frozen=True)
class Task:
  """What differs between tasks; the loop itself does not."""
  loss_fn: steps.LossFn
  sums_fn: steps.SumsFn
  inputs_fn: steps.InputsFn = steps.image_inputs
  means_fn: MeansFn = evaluate.means_from_sums
  check_batch: Optional[CheckBatchFn] = None
