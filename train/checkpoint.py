"""Orbax checkpoints: the TrainState and a JSON record of the run, committed together.

Each step directory holds two items that orbax commits in one rename:
  `state/`        the TrainState's arrays;
  `run/run.json`  the run record (train/run_record.py: the config, data facts, array
                  shapes, the progress: step, training seconds, eval history) and the
                  SHA-256 of the state's bytes.
Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it on commit, so a
run killed mid-save leaves the previous checkpoint intact, and the progress can never
disagree with the state it describes.

Restoring walks from the newest step to the oldest. A step whose record or arrays do
not read back, or whose bytes do not match the saved checksum (a flipped bit that
the decompressor let through), is moved aside to `<workdir>/corrupt_checkpoints/`
with a warning naming its step and path, and the next older step is tried; the
newer checkpoint never replaces the older before it is committed and at least two
are kept, so one bad write never costs more than the steps since the one before.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import warnings
from typing import Any, Callable, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from errors import UserError
from train.state import TrainState

STATE, RUN = 'state', 'run'


class CheckpointError(UserError):
  """The checkpoints of a workdir cannot be used (none restores, or an unknown format)."""


@dataclasses.dataclass
class Restored:
  step: int
  state: TrainState
  record: dict[str, Any]  # the run record saved with it (train/run_record.py)


def _host_array(x: Any) -> np.ndarray:
  # A replicated array spanning several processes is not fully addressable; every
  # process holds a whole copy in its first shard.
  return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)


def state_checksum(tree: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes (host copies)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    array = np.ascontiguousarray(_host_array(leaf))
    digest.update(f'{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|'.encode())
    digest.update(array.reshape(-1).view(np.uint8))  # the bytes, without a copy
  return digest.hexdigest()


# orbax's coroutine that reads one array; the reads a failed restore abandons outlive it.
_ORBAX_READ = '_read_array_index_and_device_put'


def _silence_abandoned_reads() -> None:
  """If a restore fails, orbax's other reads of that step are left pending; when they are
  freed (any time later, down to interpreter exit) each prints a ~60-line 'Exception
  ignored in: <coroutine ...>' TensorStore spec. The failure is already reported in
  one warning line: drop exactly these, pass every other unraisable exception on.
  (TensorStore's threads may still print 'RuntimeError: Event loop is closed' for reads
  that end after orbax closed its event loop: they bypass every Python hook.)"""
  if getattr(sys.unraisablehook, 'redconv_abandoned_reads', False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if getattr(getattr(unraisable.object, 'cr_code', None), 'co_name', '') != _ORBAX_READ:
      previous(unraisable)

  hook.redconv_abandoned_reads = True
  sys.unraisablehook = hook
  warnings.filterwarnings('ignore', f"coroutine '{_ORBAX_READ}' was never awaited",
                          RuntimeWarning)


def _reason(error: BaseException) -> str:
  """One line for a warning: the innermost cause (TensorStore's message names the array
  and file; orbax's wrapper only dumps its spec)."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else ''
  text = text if len(text) <= 200 else text[:197] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


class Checkpointer:
  """Saves and restores TrainStates with their run record under `directory`."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    if max_to_keep < 2:
      raise ValueError(f'max_to_keep={max_to_keep}: keep at least 2 checkpoints, so a '
                       'corrupt newest one can fall back to the one before.')
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       RUN: ocp.JsonCheckpointHandler(filename='run.json')})

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, state: TrainState, record: dict[str, Any]) -> None:
    """Commits the state and `record` (JSON-able) as one checkpoint at `state.step`."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    # Saved as a plain state dict: the pytree leaves, not the optimizer's functions.
    tree = flax.serialization.to_state_dict(state)
    record = {**record, 'state_sha256': state_checksum(tree)}
    try:
      self._manager.save(step, args=ocp.args.Composite(
          **{STATE: ocp.args.StandardSave(tree), RUN: ocp.args.JsonSave(record)}), force=True)
      self._manager.wait_until_finished()
    except OSError as e:  # disk full, read-only filesystem, quota: the input, not a bug
      kept = [s for s in self.all_steps() if s != step]
      raise CheckpointError(
          f'could not write the checkpoint of step {step} to {self.directory}: {e}. '
          + (f'The checkpoint of step {kept[-1]} is kept.' if kept else '')) from e

  def read_record(self, step: int) -> dict[str, Any]:
    """The run record saved at `step`; raises if it does not read back."""
    self._check_format(step)
    return self._manager.restore(step, args=ocp.args.Composite(
        **{RUN: ocp.args.JsonRestore()}))[RUN]

  def newest_record(self) -> Optional[tuple[int, dict[str, Any]]]:
    """(step, record) of the newest checkpoint whose record reads back, or None.
    Reads only: corrupt steps are left for `restore_newest` to move aside."""
    for step in reversed(self.all_steps()):
      try:
        return step, self.read_record(step)
      except CheckpointError:
        raise
      except Exception:  # pylint: disable=broad-except
        continue
    return None

  def restore(self, template: TrainState, step: int) -> tuple[TrainState, dict[str, Any]]:
    """The state and record at `step` in the structure of `template`; raises if corrupt."""
    record = self.read_record(step)
    return self._restore_state(template, step, record), record

  def _restore_state(self, template: TrainState, step: int, record: dict[str, Any]
                     ) -> TrainState:
    target = flax.serialization.to_state_dict(template)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    tree = self._manager.restore(step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardRestore(abstract)}))[STATE]
    if state_checksum(tree) != record.get('state_sha256'):
      raise ValueError('the arrays read back differ from those saved (checksum mismatch)')
    return flax.serialization.from_state_dict(template, tree)

  def restore_newest(self, template: TrainState,
                     check: Callable[[dict[str, Any], int], None] = lambda record, step: None
                     ) -> Optional[Restored]:
    """The newest checkpoint that restores, or None if there is none at all.

    `check(record, step)` runs on each readable record before its arrays are read and
    raises to stop (e.g. the config changed): that is not corruption, nothing is
    skipped. Corrupt steps are moved aside with a warning; if none restores, raises
    `CheckpointError` naming the directory.
    """
    _silence_abandoned_reads()  # before the first read: they may end at any time
    skipped = []
    for step in reversed(self.all_steps()):
      try:
        record = self.read_record(step)
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (TensorStore, json, orbax)
        skipped.append(self._skip(step, e))
        continue
      check(record, step)
      try:
        state = self._restore_state(template, step, record)
      except Exception as e:  # pylint: disable=broad-except
        skipped.append(self._skip(step, e))
        continue
      return Restored(step, state, record)
    if skipped:
      raise CheckpointError(
          f'no checkpoint in {self.directory} restores ({"; ".join(skipped)}); they were '
          f'moved to {self._aside_directory()}. Rerun to start afresh, or use a new '
          '--workdir.')
    return None

  def _check_format(self, step: int) -> None:
    path = self.step_path(step)
    if not os.path.isdir(os.path.join(path, RUN)) and os.path.isdir(
        os.path.join(path, 'default')):
      raise CheckpointError(
          f'the checkpoint {path} was written by an older redconv, without the record of '
          'its config and progress, and cannot be resumed; use a new --workdir (or move '
          f'{self.directory} away to start afresh).')

  def _aside_directory(self) -> str:
    return os.path.join(os.path.dirname(self.directory), 'corrupt_checkpoints')

  def _skip(self, step: int, error: BaseException) -> str:
    """Moves a corrupt step out of the way (so it is never resumed, and the step can be
    saved again) and warns; returns the reason for the summary."""
    path = self.step_path(step)
    aside = os.path.join(self._aside_directory(), str(step))
    suffix = 1
    while os.path.exists(aside):
      aside, suffix = os.path.join(self._aside_directory(), f'{step}.{suffix}'), suffix + 1
    if jax.process_index() == 0:
      os.makedirs(self._aside_directory(), exist_ok=True)
      os.rename(path, aside)
      print(f'warning: skipping the checkpoint of step {step} ({path}): it does not restore '
            f'({_reason(error)}); moved it to {aside}.', file=sys.stderr)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'redconv_skip_checkpoint_{step}')
    self._manager.reload()
    return f'step {step}: {_reason(error)}'

  def close(self) -> None:
    self._manager.close()
