"""ResNet-50 (models/resnet50.py): torchvision's sizes, frozen BatchNorm and freeze_at."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.frozen_layers import FrozenBatchNorm
from models.resnet50 import ResNet50

SMALL = dict(stage_blocks=(1, 1, 1, 1))


def _count(tree) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def test_parameter_count_is_torchvisions():
  # torchvision.models.resnet50(): 25,557,032 parameters and 53,120 BatchNorm buffers.
  variables = jax.eval_shape(lambda: ResNet50(num_classes=1000, norm='batch').init(
      jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  assert _count(variables['params']) == 25_557_032
  assert _count(variables['batch_stats']) == 53_120
  frozen = jax.eval_shape(lambda: ResNet50(num_classes=1000).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  assert _count(frozen['params']) == 25_557_032 - 53_120
  assert _count(frozen['frozen']) == 2 * 53_120


def test_stage_shapes_and_strides():
  model = ResNet50(**SMALL)
  stages, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0),
                                                           jnp.zeros((2, 64, 96, 3))))
  chex.assert_shape(stages, [(2, 16, 24, 256), (2, 8, 12, 512), (2, 4, 6, 1024),
                             (2, 2, 3, 2048)])


def test_frozen_batchnorm_is_batchnorm_in_inference_mode():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32)
  stats = {k: jnp.asarray(rng.uniform(0.5, 2.0, 8), jnp.float32)
           for k in ('scale', 'bias', 'mean', 'var')}
  ours = FrozenBatchNorm().apply({'frozen': stats}, x)
  reference = nn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(
      {'params': {'scale': stats['scale'], 'bias': stats['bias']},
       'batch_stats': {'mean': stats['mean'], 'var': stats['var']}}, x)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('freeze_at,frozen_modules', [
    (0, set()), (1, {'conv1'}), (2, {'conv1', 'layer1_block0'})])
def test_freeze_at_moves_stages_out_of_params(freeze_at, frozen_modules):
  variables = ResNet50(freeze_at=freeze_at, **SMALL).init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 32, 32, 3)))
  trained = set(variables['params'])
  assert trained.isdisjoint(frozen_modules)
  assert {'layer2_block0', 'layer4_block0'} <= trained
  # Frozen convs keep their kernels in 'frozen', beside the (always frozen) norms.
  frozen = variables['frozen']
  assert ('conv1' in frozen) == ('conv1' in frozen_modules)
  assert ('conv1' in frozen['layer1_block0']) == ('layer1_block0' in frozen_modules)
  assert set(frozen['layer2_block0']) == {'bn1', 'bn2', 'bn3', 'downsample_bn'}


def test_training_moves_only_the_unfrozen_stages():
  """SGD with momentum and weight decay on the params: the stem and layer1 (freeze_at=2)
  are not among them, and the gradient reaches layer2."""
  model = ResNet50(num_classes=4, freeze_at=2, **SMALL)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), images)
  params, frozen = variables['params'], variables['frozen']
  tx = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9))
  opt_state = tx.init(params)

  def loss_fn(p):
    logits = model.apply({'params': p, 'frozen': frozen}, images, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 3])).mean()

  grads = jax.grad(loss_fn)(params)
  updates, _ = tx.update(grads, opt_state, params)
  new = optax.apply_updates(params, updates)
  assert not np.allclose(new['layer2_block0']['conv1']['kernel'],
                         params['layer2_block0']['conv1']['kernel'])
  assert float(jnp.abs(grads['layer2_block0']['conv2']['kernel']).max()) > 0
  assert 'conv1' not in new and 'layer1_block0' not in new
  assert set(frozen['layer1_block0']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                                          'downsample_conv', 'downsample_bn'}


def test_rejects_bad_norm_and_freeze_at():
  with pytest.raises(ValueError, match='freeze_at=6'):
    ResNet50(freeze_at=6, **SMALL).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="norm='group'"):
    ResNet50(norm='group', **SMALL).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_bfloat16_computes_in_bfloat16_with_float32_params():
  model = ResNet50(dtype=jnp.bfloat16, **SMALL)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  stages = model.apply(variables, jnp.ones((1, 32, 32, 3)))
  assert all(s.dtype == jnp.bfloat16 for s in stages)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
