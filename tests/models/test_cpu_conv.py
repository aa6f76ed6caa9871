import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from models import conv_kernels, cpu_conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _inputs(x_shape, kernel_shape, seed=0):
  kx, kw = jax.random.split(jax.random.PRNGKey(seed))
  return (jax.random.normal(kx, x_shape), 0.3 * jax.random.normal(kw, kernel_shape))


def _pair(padding, strides=(1, 1)):
  def ours(x, w):
    return cpu_conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

  def reference(x, w):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                    precision=lax.Precision.HIGHEST)
  return ours, reference


def _compiled(fn, *args) -> str:
  return jax.jit(fn).lower(*args).compile().as_text()


def _convolutions_in_compiled(fn, *args) -> int:
  return sum(' convolution(' in line for line in _compiled(fn, *args).splitlines())


CASES = [  # few taps (multiply-adds forward) and many (lax forward), strides, paddings
    ((4, 12, 10, 1), (3, 3, 1, 8), 'SAME', (1, 1)),
    ((2, 9, 9, 3), (3, 3, 3, 5), 'SAME', (1, 1)),
    ((2, 11, 8, 1), (5, 5, 1, 4), 'VALID', (1, 1)),
    ((3, 7, 7, 2), (3, 3, 2, 6), ((2, 0), (1, 1)), (1, 1)),
    ((2, 10, 10, 16), (3, 3, 16, 32), 'SAME', (1, 1)),
    ((2, 10, 10, 16), (3, 3, 16, 20), 'SAME', (2, 2)),
    ((2, 9, 10, 8), (1, 1, 8, 16), 'SAME', (2, 3)),
]


@pytest.mark.parametrize('x_shape,kernel_shape,padding,strides', CASES)
def test_values_and_both_gradients_match_lax(x_shape, kernel_shape, padding, strides):
  x, w = _inputs(x_shape, kernel_shape)
  ours, reference = _pair(padding, strides)
  y = jax.jit(ours)(x, w)
  expected = reference(x, w)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.PRNGKey(2), y.shape)
  got_dx, got_dw = jax.jit(lambda x, w, g: jax.vjp(ours, x, w)[1](g))(x, w, g)
  dx, dw = jax.vjp(reference, x, w)[1](g)
  np.testing.assert_allclose(got_dx, dx, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(got_dw, dw, rtol=1e-5, atol=1e-4)


def _custom_calls(text: str, target: str) -> int:
  return text.count(f'custom_call_target="{target}"')


def test_few_channels_forward_compiles_to_no_convolution_on_cpu():
  # XLA:CPU runs one fused loop, not a convolution kernel, in the first layer's
  # forward pass.
  x, w = _inputs((8, 28, 28, 1), (3, 3, 1, 32))
  ours, reference = _pair('SAME')
  assert _convolutions_in_compiled(reference, x, w) == 1
  text = _compiled(ours, x, w)
  assert ' convolution(' not in text and 'custom_call_target' not in text


@pytest.mark.skipif(not conv_kernels.available(), reason='no C++ compiler: lax fallback')
@pytest.mark.parametrize('strides,input_grad_calls,forward_target,weight_grad_target', [
    ((1, 1), 1, 'redconv_conv_winograd', 'redconv_conv_winograd_weight_grad'),
    ((2, 2), 4, 'redconv_conv_forward', 'redconv_conv_weight_grad')])
def test_the_compiled_kernels_run_the_convolutions_on_cpu(strides, input_grad_calls,
                                                          forward_target, weight_grad_target):
  # Many inputs: forward pass and weight gradient are the compiled kernels, and so is
  # the input gradient: at stride 1 the forward kernel on the flipped kernel, with a
  # stride of 2 on the four phases' sub-kernels. XLA drops what is not asked.
  # 3x3 at stride 1 with 32 and 64 channels: Winograd's kernels, the direct ones else.
  x, w = _inputs((8, 14, 14, 32), (3, 3, 32, 64))
  ours, _ = _pair('SAME', strides)
  forward = _compiled(ours, x, w)
  assert _custom_calls(forward, forward_target) == 1 and ' convolution(' not in forward
  assert 'redconv_conv' not in forward.replace(forward_target, '')
  weight_grad = _compiled(jax.grad(lambda w, x: ours(x, w).sum()), w, x)
  assert _custom_calls(weight_grad, weight_grad_target) == 1
  assert ' convolution(' not in weight_grad
  assert 'redconv_conv' not in weight_grad.replace(weight_grad_target, '')
  both = _compiled(jax.grad(lambda x, w: ours(x, w).sum(), argnums=(0, 1)), x, w)
  assert _custom_calls(both, forward_target) == input_grad_calls
  assert ' convolution(' not in both


@pytest.mark.parametrize('x_shape,kernel_shape,kwargs', [
    ((2, 10, 10, 1), (3, 3, 1, 8), {'rhs_dilation': (2, 2)}),
    ((2, 10, 10, 1), (3, 3, 1, 8), {'lhs_dilation': (2, 2), 'padding': ((1, 1), (1, 1))}),
    ((2, 10, 10, 4), (3, 3, 2, 8), {'feature_group_count': 2}),
    ((2, 10, 10, 1), (8, 1, 3, 3), {'dimension_numbers': ('NHWC', 'OIHW', 'NHWC')}),
    ((2, 10, 10, 1), (3, 3, 1, 8), {'dtype': jnp.bfloat16}),
])
def test_anything_else_is_lax_itself(x_shape, kernel_shape, kwargs):
  kwargs = {'window_strides': (1, 1), 'padding': 'SAME', 'dimension_numbers': NHWC,
            **kwargs}
  dtype = kwargs.pop('dtype', jnp.float32)
  x, w = (a.astype(dtype) for a in _inputs(x_shape, kernel_shape))
  ours = cpu_conv.conv_general_dilated(x, w, **kwargs)
  np.testing.assert_array_equal(ours, lax.conv_general_dilated(x, w, **kwargs))
  assert _convolutions_in_compiled(
      lambda x, w: cpu_conv.conv_general_dilated(x, w, **kwargs), x, w) == 1
  weight_grad = jax.grad(lambda w, x: cpu_conv.conv_general_dilated(x, w, **kwargs).sum())
  assert 'custom_call_target' not in _compiled(weight_grad, w, x)


def test_as_the_convolution_of_a_flax_conv_same_parameters_and_output():
  x, _ = _inputs((2, 14, 14, 1), (3, 3, 1, 1))
  plain = nn.Conv(16, (3, 3), padding='SAME')
  patched = nn.Conv(16, (3, 3), padding='SAME',
                    conv_general_dilated=cpu_conv.conv_general_dilated)
  variables = plain.init(jax.random.PRNGKey(0), x)
  assert (jax.tree.map(jnp.shape, patched.init(jax.random.PRNGKey(0), x))
          == jax.tree.map(jnp.shape, variables))
  np.testing.assert_allclose(patched.apply(variables, x), plain.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('platform,convolutions', [('cpu', 0), ('cuda', 1), ('tpu', 1)])
def test_accelerators_lower_lax_convolution(platform, convolutions):
  # platform_dependent keeps only the lowering platform's branch: a GPU or TPU runs
  # its own convolution (cuDNN, the MXU), never the multiply-adds.
  x, w = _inputs((8, 28, 28, 1), (3, 3, 1, 32))
  ours, _ = _pair('SAME')
  text = jax.jit(ours).trace(x, w).lower(lowering_platforms=(platform,)).as_text()
  assert text.count('stablehlo.convolution') == convolutions


@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
def test_accelerators_lower_lax_weight_gradient(platform):
  # Nor the CPU kernels' custom calls, which no accelerator has: lax's convolutions.
  x, w = _inputs((8, 14, 14, 16), (3, 3, 16, 32))
  ours, _ = _pair('SAME')
  both = jax.grad(lambda x, w: (ours(x, w) ** 2).sum(), argnums=(0, 1))
  text = jax.jit(both).trace(x, w).lower(lowering_platforms=(platform,)).as_text()
  assert 'redconv_conv' not in text
  assert text.count('stablehlo.convolution') == 3  # forward, input and weight gradients


def test_one_by_one_convolutions_are_matrix_products_on_cpu():
  # No padding, any stride: a dot on every stride-th pixel, forward and both gradients.
  x, w = _inputs((4, 9, 8, 16), (1, 1, 16, 4))
  ours, reference = _pair('SAME', (2, 2))
  both = jax.grad(lambda x, w: (ours(x, w) ** 2).sum(), argnums=(0, 1))
  for text, dots in ((_compiled(ours, x, w), 1), (_compiled(both, x, w), 3)):
    assert ' convolution(' not in text and 'custom_call_target' not in text
    assert text.count(' dot(') == dots
  np.testing.assert_allclose(jax.jit(ours)(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
