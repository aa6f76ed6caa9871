"""Orbax checkpoints of the whole TrainState, with auto-resume from the latest one.

Orbax writes each step into a temporary directory and renames it on commit, so a
run killed mid-save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from typing import Optional

import flax
import jax
import orbax.checkpoint as ocp

from train.state import TrainState


class Checkpointer:
  """Saves and restores TrainStates under `directory` (one sub-directory per step)."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: TrainState, force: bool = True) -> None:
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    # Saved as a plain state dict: the pytree leaves, not the optimizer's functions.
    tree = flax.serialization.to_state_dict(state)
    self._manager.save(step, args=ocp.args.StandardSave(tree), force=force)
    self._manager.wait_until_finished()

  def restore(self, template: TrainState, step: Optional[int] = None) -> TrainState:
    """Restores `step` (default: latest) into the structure of `template`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}.')
    target = flax.serialization.to_state_dict(template)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    tree = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return flax.serialization.from_state_dict(template, tree)

  def close(self) -> None:
    self._manager.close()
