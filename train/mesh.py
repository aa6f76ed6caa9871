"""Data parallelism through `jax.sharding`: one code path for 1 device, N, many hosts.

A 1-D `Mesh` with axis 'data' spans every device of every process. Batches are
sharded along it (`NamedSharding(mesh, P('data'))`), the TrainState is replicated
(`P()`), and the step is `jax.jit`ted over the mesh: XLA inserts the gradient
all-reduce, and BatchNorm's batch statistics are those of the global batch, so the
result equals one device on the whole batch (up to float summation order).

Each process feeds only its own rows of the global batch (`local_rows`); the global
`jax.Array` is assembled with `jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from errors import ConfigError

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A mesh with one axis 'data' over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over 'data', other dimensions whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def num_devices(mesh: Mesh) -> int:
  return int(mesh.devices.size)


def check_batch_size(batch_size: int, mesh: Mesh, field: str = 'config.batch_size') -> None:
  """Raises unless the global batch splits evenly over the mesh's devices."""
  n = num_devices(mesh)
  if batch_size % n:
    processes = len({d.process_index for d in mesh.devices.flat})
    raise ConfigError(
        f'{field}={batch_size} is not divisible by the {n} devices of the data-parallel '
        f'mesh ({processes} process(es)); use a multiple of {n}, e.g. '
        f'{max(n, batch_size // n * n)} or {(batch_size // n + 1) * n}.')


def round_up_to_devices(batch_size: int, mesh: Mesh) -> int:
  """The smallest multiple of the device count >= `batch_size` (for padded eval batches)."""
  n = num_devices(mesh)
  return -(-batch_size // n) * n


def local_rows(batch_size: int, mesh: Mesh) -> tuple[int, int]:
  """(shard_index, num_shards): this process's contiguous block of every global batch.

  The rows of a `[batch_size, ...]` array that live on this process's devices form
  block `shard_index` of `num_shards` equal blocks (checked, not assumed).
  """
  sharding = batch_sharding(mesh)
  starts, stops = [], []
  for index in sharding.addressable_devices_indices_map((batch_size,)).values():
    starts.append(index[0].start or 0)
    stops.append(batch_size if index[0].stop is None else index[0].stop)
  start, stop = min(starts), max(stops)
  per_process = stop - start
  num_shards = batch_size // per_process
  if sum(b - a for a, b in zip(starts, stops)) != per_process or start % per_process:
    raise ValueError(f'the devices of process {jax.process_index()} do not hold one '
                     f'contiguous block of the batch (rows {sorted(zip(starts, stops))}).')
  return start // per_process, num_shards


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh,
                 batch_size: int) -> dict[str, jax.Array]:
  """This process's rows `[batch_size / num_processes, ...]` -> global `[batch_size, ...]`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(
              sharding, np.asarray(v), (batch_size,) + np.shape(v)[1:])
          for k, v in local_batch.items()}


def local_slice(batch: Mapping[str, np.ndarray], batch_size: int, mesh: Mesh
                ) -> dict[str, np.ndarray]:
  """This process's rows of a batch every process holds whole (e.g. evaluation)."""
  shard_index, num_shards = local_rows(batch_size, mesh)
  per_process = batch_size // num_shards
  rows = slice(shard_index * per_process, (shard_index + 1) * per_process)
  return {k: v[rows] for k, v in batch.items()}


def to_local(tree: Any) -> Any:
  """A replicated global pytree as arrays on this process's first device.

  With several processes, a replicated array spans devices this process cannot
  address; post-training analysis (plain `jax.jit`, one process) needs local ones.
  """
  if jax.process_count() == 1:
    return tree
  return jax.device_put(jax.device_get(tree), jax.local_devices()[0])
