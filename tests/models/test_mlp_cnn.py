import chex
import jax
import jax.numpy as jnp
import pytest

from models import MODELS, build_model
from models.cnn import CNN
from models.mlp import MLP
from train.state import count_params


def _init(model, shape):
  return model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                    jnp.zeros(shape), train=False)


def test_registry_builds_both_models():
  assert {'mlp', 'cnn'} <= set(MODELS.names())
  assert isinstance(build_model({'name': 'mlp', 'hidden_widths': (8,)}), MLP)
  assert isinstance(build_model({'name': 'cnn'}, num_classes=3), CNN)


@pytest.mark.parametrize('batch', [1, 5])
def test_mlp_shape_and_parameter_count(batch):
  model = MLP(num_classes=10, hidden_widths=(512, 256))
  variables = _init(model, (batch, 28, 28, 1))
  logits = model.apply(variables, jnp.ones((batch, 28, 28, 1)))
  chex.assert_shape(logits, (batch, 10))
  # (784*512 + 512) + (512*256 + 256) + (256*10 + 10)
  assert count_params(variables['params']) == 535_818


@pytest.mark.parametrize('batch', [1, 3])
def test_cnn_shape_and_parameter_count(batch):
  model = CNN(num_classes=10, widths=(32, 64), dense_width=256)
  variables = _init(model, (batch, 28, 28, 1))
  logits = model.apply(variables, jnp.ones((batch, 28, 28, 1)))
  chex.assert_shape(logits, (batch, 10))
  convs = (9 * 1 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64)  # no conv bias; BN scale+bias
  dense = (7 * 7 * 64 * 256 + 256) + (256 * 10 + 10)
  assert count_params(variables['params']) == convs + dense
  chex.assert_shape(variables['batch_stats']['BatchNorm_0']['mean'], (32,))


def test_cnn_works_on_odd_sizes_and_colour():
  model = CNN(num_classes=4, widths=(8, 8, 8))
  variables = _init(model, (2, 33, 31, 3))
  chex.assert_shape(model.apply(variables, jnp.ones((2, 33, 31, 3))), (2, 4))


def test_dropout_only_in_training():
  model = MLP(hidden_widths=(64,), dropout_rate=0.5)
  variables = _init(model, (4, 28, 28, 1))
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 28, 28, 1))
  eval_a = model.apply(variables, x, train=False)
  eval_b = model.apply(variables, x, train=False)
  chex.assert_trees_all_equal(eval_a, eval_b)
  train_a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(3)})
  assert not jnp.allclose(train_a, eval_a)


def test_bf16_compute_keeps_float32_params_and_logits():
  model = CNN(widths=(8, 16), dtype=jnp.bfloat16)
  variables = _init(model, (2, 28, 28, 1))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables['params']))
  logits = model.apply(variables, jnp.ones((2, 28, 28, 1)))
  assert logits.dtype == jnp.float32
