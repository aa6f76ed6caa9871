"""Many processes (hosts) through JAX's own runtime: `jax.distributed.initialize`.

Settings, from the config's optional `distributed` block or the environment (the
config wins where both are set):

  REDCONV_COORDINATOR     host:port of process 0's coordinator  (coordinator_address)
  REDCONV_NUM_PROCESSES   how many processes in all              (num_processes)
  REDCONV_PROCESS_ID      this process, 0 .. num_processes - 1   (process_id)
  REDCONV_LOCAL_DEVICE_IDS  optional, e.g. "0,1": this process's GPUs (local_device_ids)
  REDCONV_DISTRIBUTED=auto  let JAX detect the cluster (Cloud TPU pods, SLURM, Open MPI)

Nothing set, or one process: a no-op, so a laptop run needs no settings. It must run
before JAX touches a device; experiments/cli.py calls it first and the loop calls it
again (idempotent) so every experiment gets it.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import jax

ENV_COORDINATOR = 'REDCONV_COORDINATOR'
ENV_NUM_PROCESSES = 'REDCONV_NUM_PROCESSES'
ENV_PROCESS_ID = 'REDCONV_PROCESS_ID'
ENV_LOCAL_DEVICE_IDS = 'REDCONV_LOCAL_DEVICE_IDS'
ENV_AUTO = 'REDCONV_DISTRIBUTED'


def settings(config: Optional[Mapping[str, Any]] = None,
             environ: Optional[Mapping[str, str]] = None) -> Optional[dict[str, Any]]:
  """The keyword arguments for `jax.distributed.initialize`, or None for one process.

  `config`: the `distributed` block (coordinator_address, num_processes, process_id,
  local_device_ids, auto); unset fields fall back to the REDCONV_* variables.
  """
  config = dict(config) if config is not None else {}
  environ = os.environ if environ is None else environ

  def pick(field, env, convert=str):
    value = config.get(field)
    if value in (None, ''):
      value = environ.get(env)
      if value in (None, ''):
        return None
      try:
        return convert(value)
      except ValueError as e:
        raise ValueError(f'environment variable {env}={value!r}: {e}') from e
    return value

  if config.get('auto') or environ.get(ENV_AUTO, '').lower() == 'auto':
    return {}  # jax.distributed.initialize() detects the cluster itself
  num_processes = pick('num_processes', ENV_NUM_PROCESSES, int)
  if num_processes is None or num_processes == 1:
    return None
  kwargs = {'coordinator_address': pick('coordinator_address', ENV_COORDINATOR),
            'num_processes': num_processes,
            'process_id': pick('process_id', ENV_PROCESS_ID, int)}
  missing = [f'{name} ({env})' for name, env in
             (('coordinator_address', ENV_COORDINATOR), ('process_id', ENV_PROCESS_ID))
             if kwargs[name] is None]
  if missing:
    raise ValueError(f'num_processes={num_processes} but {" and ".join(missing)} not set: '
                     'every process needs the coordinator host:port and its own id.')
  if not 0 <= kwargs['process_id'] < num_processes:
    raise ValueError(f'process_id={kwargs["process_id"]} is outside [0, {num_processes}).')
  local_ids = pick('local_device_ids', ENV_LOCAL_DEVICE_IDS,
                   lambda s: [int(i) for i in s.split(',')])
  if local_ids is not None:
    kwargs['local_device_ids'] = list(local_ids)
  return kwargs


def initialize(config: Optional[Mapping[str, Any]] = None) -> bool:
  """Joins the multi-process runtime if configured; True when several processes run."""
  kwargs = settings(config)
  if kwargs is not None and not jax.distributed.is_initialized():
    jax.distributed.initialize(**kwargs)
  return jax.process_count() > 1


def is_main_process() -> bool:
  """Process 0 alone writes reports, metrics and progress files (not checkpoints)."""
  return jax.process_index() == 0
