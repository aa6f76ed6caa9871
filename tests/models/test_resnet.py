"""CIFAR ResNets and the fast speed-record nets: shapes, sizes, learning, bfloat16."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import build_model, resnet


def _init_shapes(model, batch=2):
  """Parameter and output shapes without running a convolution (jax.eval_shape)."""
  x = jnp.zeros((batch, 32, 32, 3))
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             jax.random.PRNGKey(0), x)
  out = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  return variables, out


@pytest.mark.parametrize('name, params_range', [
    ('resnet20', (0.26e6, 0.28e6)),   # He et al. report 0.27M
    ('resnet56', (0.84e6, 0.87e6)),   # and 0.85M
    ('resnet9', (6.4e6, 6.7e6)),      # Page's net: ~6.5M
    ('airbench', (1.9e6, 2.1e6)),     # airbench94: ~2M
])
def test_logit_shapes_and_sizes(name, params_range):
  variables, out = _init_shapes(build_model({'name': name}, num_classes=10))
  chex.assert_shape(out, (2, 10))
  assert out.dtype == jnp.float32
  n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables['params']))
  assert params_range[0] <= n <= params_range[1], n


def test_invalid_configurations_are_errors():
  with pytest.raises(ValueError, match='6 n \\+ 2'):
    _init_shapes(resnet.ResNetCifar(depth=21))
  with pytest.raises(ValueError, match='one entry per stage'):
    _init_shapes(resnet.FastNet(widths=(8, 16), extra_convs=(1,)))


def _small_fastnet(**kwargs):
  return resnet.FastNet(num_classes=10, stem_width=8, widths=(8, 16, 16), extra_convs=(1, 0, 1),
                        residual=True, **kwargs)


def _train(model, steps=8, lr=0.05):
  """Nesterov SGD on one fixed batch of 16 16x16 images; returns the losses, the params."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 16))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  params, stats = variables['params'], variables['batch_stats']
  tx = optax.sgd(lr, momentum=0.9, nesterov=True)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state):
    def loss_fn(p):
      logits, new = model.apply({'params': p, 'batch_stats': stats}, x, train=True,
                                mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new['batch_stats'], opt_state, loss

  losses = []
  for _ in range(steps):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  return losses, params


@pytest.mark.parametrize('model', [
    _small_fastnet(),
    resnet.ResNetCifar(depth=8),
], ids=['fastnet', 'resnet8'])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(model):
  losses, _ = _train(model, lr=0.2)
  assert losses[-1] < 0.75 * losses[0], losses


def test_bfloat16_computes_in_bf16_with_float32_params_and_finite_losses():
  model = _small_fastnet(dtype=jnp.bfloat16)
  x = jnp.ones((2, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  logits = model.apply(variables, x, train=False)
  assert logits.dtype == jnp.float32
  chex.assert_trees_all_equal_dtypes(variables['params'],
                                     jax.tree_util.tree_map(lambda p: p.astype(jnp.float32),
                                                            variables['params']))
  _, inter = model.apply(variables, x, train=False, capture_intermediates=True)
  conv_out = inter['intermediates']['ConvBN_0']['Conv_0']['__call__'][0]
  assert conv_out.dtype == jnp.bfloat16
  losses, params = _train(model)
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))


def test_resnet_blocks_start_as_identity():
  # The zero-initialised last BN scale makes a same-shape block return relu(x).
  block = resnet.BasicBlock(width=4)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 4))
  variables = block.init(jax.random.PRNGKey(0), x, train=False)
  chex.assert_trees_all_close(block.apply(variables, x, train=False), jax.nn.relu(x))


def test_fastnet_pooling_options_shape():
  for pool in ('max', 'avg'):
    _, out = _init_shapes(resnet.FastNet(stem_width=0, widths=(8, 8, 8), pool=pool))
    chex.assert_shape(out, (2, 10))
