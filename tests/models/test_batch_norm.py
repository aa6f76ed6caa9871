"""models.batch_norm.BatchNorm: nn.BatchNorm with a custom training gradient on CPU."""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import cnn as cnn_module
from models import conv_kernels
from models import unet as unet_module
from models.batch_norm import BatchNorm
from models.cnn import CNN
from models.pooling import max_pool_2x2
from models.resnet import BasicBlock
from models.unet import UNet

SHAPE = (6, 5, 4, 37)  # 37 channels: whole vectors of the compiled passes and a tail


def _inputs(shape=SHAPE):
  # A mean far from 0 and a spread far from 1, so a mistake in either shows.
  x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), shape) + 2.0
  residual = jax.random.normal(jax.random.PRNGKey(1), shape)
  cotangent = jax.random.normal(jax.random.PRNGKey(2), shape)
  return x, residual, cotangent


def _variables(layer, x):
  variables = layer.init(jax.random.PRNGKey(3), x)
  # Scales and shifts other than 1 and 0, running statistics other than the initial.
  channels = x.shape[-1]
  return {'params': {'scale': jnp.linspace(0.5, 1.5, channels),
                     'bias': jnp.linspace(-1.0, 1.0, channels)},
          'batch_stats': {'mean': jnp.linspace(-0.2, 0.2, channels),
                          'var': jnp.linspace(0.8, 1.2, channels)}}


def _flax_reference(x, residual, relu, **fields):
  layer = nn.BatchNorm(use_running_average=False, momentum=0.9, **fields)

  def apply(variables, x):
    y, updates = layer.apply(variables, x, mutable=['batch_stats'])
    if residual is not None:
      y = y + residual
    return (nn.relu(y) if relu else y), updates
  return apply


def _ours(residual, relu, **fields):
  layer = BatchNorm(use_running_average=False, momentum=0.9, **fields)
  return lambda variables, x: layer.apply(variables, x, mutable=['batch_stats'],
                                          residual=residual, relu=relu)


def _loss_and_grads(apply, variables, x, cotangent):
  def loss(params, x):
    y, updates = apply({**variables, 'params': params}, x)
    # The updated running statistics enter the loss too: their cotangents must reach x.
    stats = updates['batch_stats']
    return (y * cotangent).sum() + 3.0 * stats['mean'].sum() + 2.0 * stats['var'].sum(), (
        y, updates)
  return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(variables['params'], x)


def test_same_variables_as_flax_batch_norm():
  x, _, _ = _inputs()
  ours = BatchNorm(use_running_average=False).init(jax.random.PRNGKey(3), x)
  flax_variables = nn.BatchNorm(use_running_average=False).init(jax.random.PRNGKey(3), x)
  chex.assert_trees_all_equal(ours, flax_variables)


@pytest.mark.parametrize('relu,with_residual', [(False, False), (True, False), (True, True)])
def test_values_statistics_and_gradients_match_flax(relu, with_residual):
  x, residual, cotangent = _inputs()
  residual = residual if with_residual else None
  variables = _variables(nn.BatchNorm(use_running_average=False), x)
  grads, (y, updates) = _loss_and_grads(_ours(residual, relu), variables, x, cotangent)
  expected_grads, (expected_y, expected_updates) = _loss_and_grads(
      _flax_reference(x, residual, relu), variables, x, cotangent)
  if conv_kernels.available():
    # The compiled passes: flax's values up to float32 rounding (statistics summed in
    # double, flax's in float32).
    chex.assert_trees_all_close((y, updates), (expected_y, expected_updates), rtol=1e-6,
                                atol=2e-6)
  else:
    # XLA's arithmetic: flax's forward values and running statistics, bit for bit.
    np.testing.assert_array_equal(y, expected_y)
    chex.assert_trees_all_equal(updates, expected_updates)
  # Gradients of x, scale and bias: the same up to float32 rounding.
  chex.assert_trees_all_close(grads, expected_grads, rtol=2e-5, atol=2e-5)
  if relu:
    assert (y >= 0).all() and (y == 0).any()


def test_residual_gradient_is_the_masked_output_gradient():
  x, residual, cotangent = _inputs()
  variables = _variables(nn.BatchNorm(use_running_average=False), x)
  residual_grad = jax.grad(lambda r: (BatchNorm(use_running_average=False).apply(
      variables, x, mutable=['batch_stats'], residual=r, relu=True)[0] * cotangent).sum())(
          residual)
  out = BatchNorm(use_running_average=False).apply(
      variables, x, mutable=['batch_stats'], residual=residual, relu=True)[0]
  np.testing.assert_array_equal(residual_grad, jnp.where(out > 0, cotangent, 0.0))
  assert out.shape == residual_grad.shape


def test_only_the_fast_path_has_a_cpu_branch():
  x, _, cotangent = _inputs()
  variables = _variables(nn.BatchNorm(use_running_average=False), x)

  def grad_jaxpr(**fields):
    apply = _ours(None, True, **fields)
    return str(jax.make_jaxpr(lambda p: jax.grad(
        lambda p: (apply({**variables, 'params': p}, x)[0] * cotangent).sum())(p))(
            variables['params']))
  # lax.platform_dependent: the custom VJP for CPU, flax's arithmetic elsewhere.
  assert "branches_platforms=(('cpu',), None)" in grad_jaxpr()
  assert 'branches_platforms' not in grad_jaxpr(fast_gradient=False)
  assert 'branches_platforms' not in grad_jaxpr(dtype=jnp.bfloat16)


@pytest.mark.parametrize('fields', [dict(fast_gradient=False), dict(dtype=jnp.bfloat16)])
def test_off_the_fast_path_it_is_flax_bit_for_bit(fields):
  x, residual, cotangent = _inputs()
  variables = _variables(nn.BatchNorm(use_running_average=False), x)
  grads, outputs = _loss_and_grads(_ours(residual, True, **fields), variables, x, cotangent)
  flax_fields = {k: v for k, v in fields.items() if k != 'fast_gradient'}
  expected = _loss_and_grads(_flax_reference(x, residual, True, **flax_fields), variables, x,
                             cotangent)
  chex.assert_trees_all_equal((grads, outputs), expected)


def test_evaluation_mode_and_a_mapped_axis_name_are_flax():
  x, _, _ = _inputs()
  variables = _variables(nn.BatchNorm(use_running_average=True), x)
  np.testing.assert_array_equal(
      BatchNorm(use_running_average=True).apply(variables, x, relu=True),
      nn.relu(nn.BatchNorm(use_running_average=True).apply(variables, x)))
  # Statistics averaged over a mapped axis: flax's path (pmean), same as one big batch.
  stacked = x.reshape((2, 3) + x.shape[1:])
  mapped = jax.vmap(lambda x: BatchNorm(use_running_average=False, axis_name='batch').apply(
      variables, x, mutable=['batch_stats'])[0], axis_name='batch')(stacked)
  whole = BatchNorm(use_running_average=False).apply(variables, x, mutable=['batch_stats'])[0]
  np.testing.assert_allclose(mapped.reshape(x.shape), whole, rtol=1e-5, atol=1e-5)



def _pooled_or_apart(pool: bool):
  layer = BatchNorm(use_running_average=False, momentum=0.9)

  def apply(variables, x):
    if pool:
      return layer.apply(variables, x, mutable=['batch_stats'], relu=True, pool=True)
    y, updates = layer.apply(variables, x, mutable=['batch_stats'], relu=True)
    return max_pool_2x2(y), updates
  return apply


# Even and odd sizes (a dropped last row and column), whole vectors and a tail of channels.
@pytest.mark.parametrize('shape', [(4, 8, 6, 16), (3, 7, 5, 37)])
def test_pooling_in_the_layer_is_the_layer_then_the_pooling_bit_for_bit(shape):
  x, _, _ = _inputs(shape)
  x = x.at[0, :2, :2].set(x[0, 0, 0])  # a window of ties
  variables = _variables(nn.BatchNorm(use_running_average=False), x)
  pooled_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
  cotangent = jax.random.normal(jax.random.PRNGKey(4), pooled_shape)
  fused = _loss_and_grads(_pooled_or_apart(True), variables, x, cotangent)
  apart = _loss_and_grads(_pooled_or_apart(False), variables, x, cotangent)
  chex.assert_trees_all_equal(fused, apart)
  assert fused[1][0].shape == pooled_shape
  evaluation = BatchNorm(use_running_average=True)
  np.testing.assert_array_equal(evaluation.apply(variables, x, relu=True, pool=True),
                                max_pool_2x2(evaluation.apply(variables, x, relu=True)))


@pytest.mark.skipif(not conv_kernels.available(), reason='no compiled kernels here')
def test_pooling_in_the_layer_is_one_pass_each_way_on_cpu():
  x, _, _ = _inputs((4, 8, 6, 16))
  variables = _variables(nn.BatchNorm(use_running_average=False), x)
  apply = _pooled_or_apart(True)
  hlo = jax.jit(jax.grad(lambda p, x: apply({**variables, 'params': p}, x)[0].sum(),
                        argnums=(0, 1))).lower(variables['params'], x).compile().as_text()
  calls = {target: hlo.count(f'custom_call_target="{target}"') for target in (
      'redconv_bn_stats', 'redconv_bn_apply_pool', 'redconv_bn_pool_grad_sums',
      'redconv_bn_pool_grad_input', 'redconv_bn_apply', 'redconv_bn_grad_sums',
      'redconv_bn_grad_input')}
  assert calls == {'redconv_bn_stats': 1, 'redconv_bn_apply_pool': 1,
                   'redconv_bn_pool_grad_sums': 1, 'redconv_bn_pool_grad_input': 1,
                   'redconv_bn_apply': 0, 'redconv_bn_grad_sums': 0,
                   'redconv_bn_grad_input': 0}

def _assert_same_forward(values, expected):
  # With the compiled passes the batch statistics are summed in double: flax's values up
  # to float32 rounding; with XLA's arithmetic, flax's bit for bit.
  if conv_kernels.available():
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
  else:
    np.testing.assert_array_equal(values, expected)


def _params_logits_grads(model, x, **apply_kwargs):
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(1), x)
  # Off the initial values (a zero-initialised scale would hide a wrong input gradient).
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(2), a.shape),
                        variables['params'])
  variables = {**variables, 'params': params}

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'], **apply_kwargs)
    return (jnp.sin(logits)).mean(), logits
  grads, logits = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  return variables, logits, grads


@pytest.mark.parametrize('module,model,shape', [
    (cnn_module, CNN(num_classes=3, widths=(4, 8), dense_width=8, dropout_rate=0.0),
     (4, 12, 12, 1)),
    (unet_module, UNet(num_classes=3, depth=1, base_width=4), (2, 8, 6, 3))])
def test_models_keep_their_variables_outputs_and_gradients(monkeypatch, module, model, shape):
  # The models as they were (flax's BatchNorm gradient): the same variables (checkpoints
  # load either way), the same logits and gradients up to rounding.
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  variables, logits, grads = _params_logits_grads(model, x)
  monkeypatch.setattr(module, 'BatchNorm', functools.partial(BatchNorm, fast_gradient=False))
  old_variables, old_logits, old_grads = _params_logits_grads(model, x)
  chex.assert_trees_all_equal(variables, old_variables)
  _assert_same_forward(logits, old_logits)
  chex.assert_trees_all_close(grads, old_grads, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('strides,in_channels', [(1, 8), (2, 4)])
def test_basic_block_fused_and_flax_agree(strides, in_channels):
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, in_channels))
  results = [_params_logits_grads(BasicBlock(8, strides, fast_norm_gradient=fast), x)
             for fast in (True, False)]
  (variables, out, grads), (old_variables, old_out, old_grads) = results
  chex.assert_trees_all_equal(variables, old_variables)
  _assert_same_forward(out, old_out)
  chex.assert_trees_all_close(grads, old_grads, rtol=1e-4, atol=1e-6)
  assert ('BatchNorm_2' in variables['params']) == (strides == 2)
