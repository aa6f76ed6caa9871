"""models.conv_kernels.norm: BatchNorm's compiled training passes against float64 numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import conv_kernels
from models.conv_kernels import norm

pytestmark = pytest.mark.skipif(not conv_kernels.available(),
                                reason='no C++ compiler here: XLA arithmetic instead')

# 16 channels (whole vectors only), 37 (vectors and a tail), 5 (tail only); enough rows
# for every part of the row split and several float blocks of rows.
SHAPES = [(4, 9, 10, 16), (3, 7, 5, 37), (700, 5)]


def _arrays(shape, seed=0):
  rng = np.random.default_rng(seed)
  # A mean far from 0 and a spread far from 1: a centring mistake shows.
  x = (3.0 * rng.standard_normal(shape) + 2.0).astype(np.float32)
  dy, residual = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
  channels = shape[-1]
  vectors = [rng.uniform(0.5, 1.5, channels).astype(np.float32) for _ in range(4)]
  return x, dy, residual, vectors


def _rows(a):
  return a.reshape(-1, a.shape[-1]).astype(np.float64)


@pytest.mark.parametrize('shape', SHAPES)
def test_statistics(shape):
  x, _, _, _ = _arrays(shape)
  mean, var = jax.jit(norm.stats)(x)
  rows = _rows(x)
  np.testing.assert_allclose(mean, rows.mean(0), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(var, rows.var(0), rtol=1e-6)
  # Fixed parts summed in order: the same bits every call.
  np.testing.assert_array_equal(jax.jit(norm.stats)(x)[1], var)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('relu,with_residual', [(False, False), (True, False), (True, True),
                                                (False, True)])
def test_output(shape, relu, with_residual):
  x, _, residual, (mean, mul, bias, _) = _arrays(shape)
  residual = residual if with_residual else None
  got = jax.jit(lambda *a: norm.apply(*a, relu=relu))(x, mean, mul, bias, residual)
  expected = (x.astype(np.float64) - mean) * mul + bias
  if with_residual:
    expected = expected + residual
  if relu:
    expected = np.maximum(expected, 0.0)
    assert (np.asarray(got) == 0).any()
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('relu', [False, True])
def test_gradient_passes(shape, relu):
  x, dy, residual, (mean, a, k, d) = _arrays(shape)
  out = np.maximum(x - 2.0, 0.0) if relu else None  # zeros where x < 2: a real mask
  g = np.where(out > 0, dy, 0.0) if relu else dy.astype(np.float64)
  sum_g, sum_gx = jax.jit(lambda *args: norm.grad_sums(*args, relu=relu))(dy, x, out, mean)
  np.testing.assert_allclose(sum_g, _rows(g).sum(0), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(sum_gx, (_rows(g) * (_rows(x) - mean)).sum(0), rtol=1e-5,
                             atol=1e-3)
  expected_dx = a * g + k * (x.astype(np.float64) - mean) + d
  for with_g in (False, True):
    got = jax.jit(lambda *args: norm.grad_input(*args, relu=relu, with_g=with_g))(
        dy, x, out, mean, a, k, d)
    dx = got[0] if with_g else got
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-5, atol=1e-5)
    if with_g:
      np.testing.assert_array_equal(got[1], g.astype(np.float32))


def test_under_vmap_each_slice_has_its_own_statistics():
  x, _, _, _ = _arrays((2, 6, 5, 16))
  mean, var = jax.vmap(norm.stats)(x)
  for i in range(2):
    np.testing.assert_allclose(mean[i], _rows(x[i]).mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(var[i], _rows(x[i]).var(0), rtol=1e-6)


def test_a_shape_mismatch_is_a_clear_error():
  x, _, _, (mean, mul, bias, _) = _arrays((4, 16))
  with pytest.raises(Exception, match='batch-norm output: expected x'):
    jax.block_until_ready(norm.apply(x, mean[:8], mul, bias, None, relu=False))


def _pooled_reference(x, mean, mul, bias):
  """numpy: the 2x2 windows of relu((x - mean) * mul + bias), their max, and the
  position 0..3 of the first maximum (-1 where it is 0)."""
  b, h, w, c = x.shape
  y = np.maximum((x - mean) * mul + bias, 0.0)[:, :h // 2 * 2, :w // 2 * 2]
  windows = y.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(
      b, h // 2, w // 2, c, 4)
  best = windows.max(-1)
  first = windows.argmax(-1)  # numpy's argmax: the first of equal maxima
  return best, np.where(best > 0, first, -1)


@pytest.mark.parametrize('shape', [(4, 8, 10, 16), (3, 7, 5, 37), (2, 2, 3, 5)])
def test_pooled_output_and_winners(shape):
  x, _, _, (mean, mul, bias, _) = _arrays(shape)
  x[0, :2, :2] = x[0, 1, 1]  # a window of ties: the first position wins
  x[1, :2, :2] = mean - 10.0 * np.sign(mul) * np.abs(bias) - 1.0  # a window the ReLU zeroes
  pooled, winner = norm.apply_pool(x, mean, mul, bias)
  expected_pooled, expected_winner = _pooled_reference(x, mean, mul, bias)
  np.testing.assert_allclose(pooled, expected_pooled, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(winner, expected_winner)
  assert winner.dtype == jnp.int32
  assert (np.asarray(winner)[0, 0, 0] == np.where(expected_pooled[0, 0, 0] > 0, 0, -1)).all()
  assert (np.asarray(winner)[1, 0, 0] == -1).all()


@pytest.mark.parametrize('shape', [(4, 8, 10, 16), (3, 7, 5, 37)])
def test_pooled_gradient_passes(shape):
  # g is the pooled gradient at each window's winner, 0 elsewhere (also in a dropped
  # odd last row or column).
  x, _, _, (mean, mul, bias, k) = _arrays(shape)
  pooled_shape = norm.pooled_shape(shape)
  pooled_grad = np.random.default_rng(1).standard_normal(pooled_shape).astype(np.float32)
  _, winner = norm.apply_pool(x, mean, mul, bias)
  g = np.zeros(shape, np.float64)
  b, hp, wp, c = pooled_shape
  for position in range(4):
    dy, dx = divmod(position, 2)
    g[:, dy:2 * hp:2, dx:2 * wp:2] = np.where(np.asarray(winner) == position, pooled_grad, 0.0)
  sum_g, sum_gx = norm.pool_grad_sums(pooled_grad, winner, x, mean)
  np.testing.assert_allclose(sum_g, _rows(g).sum(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sum_gx, (_rows(g) * (_rows(x) - mean)).sum(0), rtol=1e-5,
                             atol=1e-4)
  a, d = mul, bias
  dx = norm.pool_grad_input(pooled_grad, winner, x, mean, a, k, d)
  np.testing.assert_allclose(dx, a * g + k * (x.astype(np.float64) - mean) + d, rtol=1e-5,
                             atol=1e-5)


def test_a_pooled_shape_mismatch_is_a_clear_error():
  x, _, _, (mean, mul, bias, _) = _arrays((2, 4, 4, 8))
  _, winner = norm.apply_pool(x, mean, mul, bias)
  with pytest.raises(Exception, match=r'pooling gradient sums: expected pooled_grad and winner'):
    jax.block_until_ready(norm.pool_grad_sums(np.zeros((2, 2, 3, 8), np.float32),
                                              winner, x, mean))
  with pytest.raises(ValueError, match=r'pooling: expected x \[B, H, W, C\] .* \(8, 4, 8\)'):
    norm.apply_pool(x.reshape(8, 4, 8), mean, mul, bias)
