"""xla_cpu.py: when the convolution setting is added to XLA_FLAGS, and that it reaches
XLA (the compiled train-shaped weight gradient leaves YNNPACK)."""
import os
import subprocess
import sys

import pytest

import xla_cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_flag_is_added_to_empty_and_to_existing_flags():
  assert xla_cpu.xla_flags({}, (0, 10)) == xla_cpu.FLAG
  assert xla_cpu.xla_flags({'XLA_FLAGS': '--xla_force_host_platform_device_count=4'},
                           (0, 10)) == f'--xla_force_host_platform_device_count=4 {xla_cpu.FLAG}'


@pytest.mark.parametrize('environ, version', [
    ({'REDCONV_XLA_CPU': 'default'}, (0, 10)),  # opt-out
    ({'REDCONV_XLA_CPU': ' Default '}, (0, 10)),
    ({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=individual_dot'}, (0, 10)),
    ({}, (0, 9)),  # other jaxlibs: the flag may be unknown, and XLA aborts on those
    ({}, (0, 11)),
    ({}, (1, 0)),
    ({}, None),  # no jaxlib
])
def test_the_environment_is_left_alone(environ, version):
  assert xla_cpu.xla_flags(environ, version) is None


def test_configure_is_idempotent(monkeypatch):
  monkeypatch.delenv(xla_cpu.OPT_OUT, raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  monkeypatch.setattr(xla_cpu, 'jaxlib_version', lambda: (0, 10))
  xla_cpu.configure()
  xla_cpu.configure()
  assert os.environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2',
                                             xla_cpu.FLAG]
  assert 'Eigen' in xla_cpu.describe()


# In a fresh interpreter: importing `train` configures XLA before JAX's backend exists,
# and the CNN's second convolution's weight gradient then compiles without YNNPACK.
PROBE = '''
import train, jax, jax.numpy as jnp, os
from jax import lax
def loss(w, x):
  return lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()
hlo = jax.jit(jax.grad(loss)).lower(jnp.ones((3, 3, 32, 64)),
                                    jnp.ones((128, 14, 14, 32))).compile().as_text()
print('ynn' if '__ynn_fusion' in hlo else 'eigen', os.environ.get('XLA_FLAGS', ''))
'''


def _probe(**env):
  environ = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', xla_cpu.OPT_OUT)}
  out = subprocess.run([sys.executable, '-c', PROBE], cwd=REPO, env={**environ, **env},
                       capture_output=True, text=True, timeout=120, check=True)
  return out.stdout.split()[0]


@pytest.mark.skipif(
    not xla_cpu.JAXLIB_RANGE[0] <= (xla_cpu.jaxlib_version() or (0,)) < xla_cpu.JAXLIB_RANGE[1],
    reason='the setting is given to jaxlib 0.10.x only')
def test_importing_train_takes_convolutions_out_of_ynnpack():
  assert _probe() == 'eigen'
  # The opt-out gives XLA's default back: this jaxlib does use YNNPACK there, so the
  # setting is what makes the difference (if this fails, a new jaxlib changed its
  # default and xla_cpu.py should be measured again).
  assert _probe(REDCONV_XLA_CPU='default') == 'ynn'
