"""PatchConvTranspose: nn.ConvTranspose(kernel == stride) as a matrix product."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import conv_kernels
from models import unet as unet_module
from models.patch_transpose import PatchConvTranspose, patch_product
from models.unet import UNet


@pytest.mark.parametrize('shape,kernel_size,features', [
    ((2, 5, 7, 6), (2, 2), 4), ((1, 4, 3, 8), (3, 3), 5), ((3, 2, 6, 3), (2, 3), 7)])
def test_same_parameters_values_and_gradients_as_flax_conv_transpose(
    shape, kernel_size, features):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ours = PatchConvTranspose(features, kernel_size)
  flax_layer = nn.ConvTranspose(features, kernel_size, strides=kernel_size)
  variables = flax_layer.init(jax.random.PRNGKey(1), x)
  # Same parameter names, shapes and initial values for the same key.
  chex.assert_trees_all_equal(ours.init(jax.random.PRNGKey(1), x), variables)
  # A random bias, so a misplaced bias would show.
  variables = jax.tree.map(lambda a: a + jax.random.normal(jax.random.PRNGKey(2), a.shape),
                           variables)
  y = ours.apply(variables, x)
  expected = flax_layer.apply(variables, x)
  chex.assert_shape(y, (shape[0], shape[1] * kernel_size[0], shape[2] * kernel_size[1],
                        features))
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
  g = jax.random.normal(jax.random.PRNGKey(3), y.shape)
  grads = jax.grad(lambda v, x: (ours.apply(v, x) * g).sum(), argnums=(0, 1))(variables, x)
  expected_grads = jax.grad(lambda v, x: (flax_layer.apply(v, x) * g).sum(),
                            argnums=(0, 1))(variables, x)
  chex.assert_trees_all_close(grads, expected_grads, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_and_no_bias():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 3, 4))
  layer = PatchConvTranspose(2, (2, 2), use_bias=False, dtype=jnp.bfloat16)
  variables = layer.init(jax.random.PRNGKey(1), x)
  assert set(variables['params']) == {'kernel'}
  assert variables['params']['kernel'].dtype == jnp.float32
  y = layer.apply(variables, x)
  assert y.dtype == jnp.bfloat16
  expected = nn.ConvTranspose(2, (2, 2), strides=(2, 2), use_bias=False).apply(variables, x)
  np.testing.assert_allclose(y.astype(jnp.float32), expected, rtol=0.05, atol=0.05)


def test_a_non_image_input_names_the_expected_shape():
  with pytest.raises(ValueError, match=r'expected \[B, H, W, C\]'):
    PatchConvTranspose(2).init(jax.random.PRNGKey(0), jnp.ones((4, 4, 3)))


def test_unet_keeps_the_conv_transpose_parameters_and_outputs(monkeypatch):
  # The U-Net as it was, with flax's ConvTranspose: the same parameter tree (so old
  # checkpoints load) and the same logits and gradients.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 10, 3))
  model = UNet(num_classes=3, depth=2, base_width=4)
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  logits, grads = _logits_and_grads(model, variables, x)

  def flax_conv_transpose(features, kernel_size, dtype=None, name=None):
    return nn.ConvTranspose(features, kernel_size, strides=kernel_size, dtype=dtype,
                            name=name)
  monkeypatch.setattr(unet_module, 'PatchConvTranspose', flax_conv_transpose)
  old_variables = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  chex.assert_trees_all_equal(variables, old_variables)
  assert {'ConvTranspose_0', 'ConvTranspose_1'} <= set(variables['params'])
  old_logits, old_grads = _logits_and_grads(model, variables, x)
  np.testing.assert_allclose(logits, old_logits, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(grads, old_grads, rtol=1e-4, atol=1e-5)


def _logits_and_grads(model, variables, x):
  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return (logits ** 2).mean(), logits
  grads, logits = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  return logits, grads


def _loss_grads(layer, variables, x, y_grad):
  return jax.grad(lambda v, x: (layer.apply(v, x) * y_grad).sum(), argnums=(0, 1))


@pytest.mark.skipif(not conv_kernels.available(), reason='no compiled CPU kernels')
def test_gradients_on_cpu_run_the_compiled_convolution_kernels():
  # The input gradient as the stride-2 forward kernel, the kernel's as the weight
  # gradient kernel: one call each.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
  layer = PatchConvTranspose(8, (2, 2))
  variables = layer.init(jax.random.PRNGKey(1), x)
  y_grad = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 8))
  loss_grads = jax.jit(_loss_grads(layer, variables, x, y_grad))
  text = loss_grads.lower(variables, x).compile().as_text()
  assert text.count('custom_call_target="redconv_conv_forward"') == 1
  assert text.count('custom_call_target="redconv_conv_weight_grad"') == 1
  # Against the matrix product's own gradients, at a U-Net layer's channel counts.
  grads = loss_grads(variables, x)
  taps = variables['params']['kernel'][::-1, ::-1]
  expected_x = jax.grad(lambda x: (patch_product(x, taps) * y_grad).sum())(x)
  expected_taps = jax.grad(lambda t: (patch_product(x, t) * y_grad).sum())(taps)
  np.testing.assert_allclose(grads[1], expected_x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads[0]['params']['kernel'], expected_taps[::-1, ::-1],
                             rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
def test_accelerators_keep_the_matrix_product_gradients(platform):
  x = jnp.ones((2, 4, 4, 16))
  layer = PatchConvTranspose(8, (2, 2))
  variables = layer.init(jax.random.PRNGKey(1), x)
  grads = _loss_grads(layer, variables, x, jnp.ones((2, 8, 8, 8)))
  text = jax.jit(grads).trace(variables, x).lower(lowering_platforms=(platform,)).as_text()
  assert 'redconv_conv' not in text and 'stablehlo.convolution' not in text
  # The input and kernel gradients (a linear loss leaves the forward product unused).
  assert text.count('stablehlo.dot_general') == 2
