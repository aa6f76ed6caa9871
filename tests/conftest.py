"""Test set-up shared by the whole suite.

Four host CPU devices let pmap and mesh tests run without accelerators, and XLA compiles
at -O0 (below); the flags must be set before JAX is first imported, which is why they
live here (with the XLA:CPU convolution setting of every command, xla_cpu.py).
"""
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
# Tests check behaviour, not speed, and most of their time was XLA compiling hundreds of
# small programs: with its LLVM backend at -O0 the default run took 13:42-14:37 instead
# of 22-25 min on a 2-core AMD EPYC (648 tests, the same results; README). XLA's HLO
# passes still run, so the programs compute the same things, rounded the same way within
# a test. REDCONV_TEST_XLA_OPT=default keeps XLA's own level (CI's slow run does, so the
# code users run is tested too); a level already in XLA_FLAGS is left alone.
if (os.environ.get('REDCONV_TEST_XLA_OPT', '').strip().lower() != 'default'
    and '--xla_backend_optimization_level' not in os.environ['XLA_FLAGS']):
  os.environ['XLA_FLAGS'] += ' --xla_backend_optimization_level=0'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import xla_cpu  # noqa: E402

# The kernels every command runs with (xla_cpu.py), so tests see the same numerics.
xla_cpu.configure()

import pytest  # noqa: E402

SHARED_DATA = os.path.abspath(
    os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data'))


def shared_data_path(*parts: str) -> str:
  """Path under ../shared/data; skips the calling test when that data is absent."""
  path = os.path.join(SHARED_DATA, *parts)
  if not os.path.exists(path):
    pytest.skip(f'{path} not found: these tests read the shared data beside the repo.')
  return path


@pytest.fixture(autouse=True, scope='session')
def _hide_gpus_from_tensorflow():
  # tf.data runs on the host; TensorFlow must not claim accelerator memory JAX needs.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
