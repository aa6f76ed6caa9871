import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.pooling import max_pool_2x2


def _reference(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _tied_input(shape, seed=0):
  # Rounded and clipped at zero, as after a ReLU: many windows hold equal maxima.
  x = jax.random.normal(jax.random.PRNGKey(seed), shape)
  return jnp.maximum(jnp.round(x), 0.0)


@pytest.mark.parametrize('shape', [(3, 8, 8, 4), (2, 7, 9, 3)])
def test_values_match_flax_max_pool(shape):
  x = _tied_input(shape)
  y = max_pool_2x2(x)
  chex.assert_shape(y, (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
  np.testing.assert_array_equal(y, _reference(x))


@pytest.mark.parametrize('shape', [(3, 8, 8, 4), (2, 7, 9, 3)])
@pytest.mark.parametrize('use_jit', [False, True])
def test_gradient_matches_flax_max_pool_including_ties(shape, use_jit):
  x = _tied_input(shape)
  g = jax.random.normal(jax.random.PRNGKey(1), _reference(x).shape)
  ours = jax.vjp(max_pool_2x2, x)[1]
  expected = jax.vjp(_reference, x)[1](g)[0]
  got = (jax.jit(ours) if use_jit else ours)(g)[0]
  np.testing.assert_array_equal(got, expected)
  # Each window passes its gradient to exactly one position, even when all four tie.
  assert int((got != 0).sum()) == int((g != 0).sum())


def test_gradient_survives_fusion_with_the_producer_under_jit():
  # x is computed inside the jitted function, so XLA may recompute it in the backward
  # pass; an equality test against the max would then lose gradient entries.
  w = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 2, 5))
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 10, 10, 2))

  def loss(w, pool):
    h = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return (pool(jax.nn.relu(h * 1.7 + 0.3)) ** 2).sum()

  got = jax.jit(jax.grad(loss), static_argnums=1)(w, max_pool_2x2)
  expected = jax.jit(jax.grad(loss), static_argnums=1)(w, _reference)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_forward_pass_compiles_to_elementwise_maxima_not_a_reduce():
  # XLA:CPU fuses the layers before the pooling into it; as a reduce fusion that ran
  # ~5x slower than the maxima of the four window positions (models/pooling.py).
  x = jnp.zeros((2, 8, 6, 3))
  hlo = jax.jit(lambda x: max_pool_2x2(jax.nn.relu(2.0 * x + 1.0))).lower(x).compile().as_text()
  assert ' reduce(' not in hlo and ' maximum(' in hlo
  reduced = jax.jit(lambda x: jax.nn.relu(2.0 * x + 1.0).reshape(2, 4, 2, 3, 2, 3).max((2, 4)))
  assert ' reduce(' in reduced.lower(x).compile().as_text()  # what the test tells apart
