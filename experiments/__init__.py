"""Experiments: one file each, a `get_config()` plus a thin `main`."""
import os

import allocator
import xla_cpu

# Before any experiment imports TensorFlow (its C++ logs at import): without this its
# start-up chatter buries the first line of an error message. A user's setting wins.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# `python -m experiments.<name>` re-executes itself here, before TensorFlow and JAX are
# imported, with the mimalloc allocator preloaded (allocator.py says why and when not).
if allocator.started_as('experiments.'):
  allocator.preload()
# Before JAX's CPU backend exists: convolutions on XLA's Eigen kernels (xla_cpu.py).
xla_cpu.configure()
