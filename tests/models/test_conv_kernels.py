import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import conv_kernels

needs_kernel = pytest.mark.skipif(not conv_kernels.available(),
                                  reason='no C++ compiler here: lax fallback')

CASES = [  # (x shape, kernel shape, padding, strides)
    ((16, 28, 28, 1), (3, 3, 1, 32), ((1, 1), (1, 1)), (1, 1)),   # the CNN's first layer
    ((8, 14, 14, 32), (3, 3, 32, 64), ((1, 1), (1, 1)), (1, 1)),  # its second
    ((2, 9, 7, 3), (3, 3, 3, 5), ((1, 1), (1, 1)), (1, 1)),       # 5 outputs: scalar tail
    ((3, 11, 8, 2), (5, 5, 2, 20), ((0, 0), (0, 0)), (1, 1)),     # 20 = vectors + tail
    ((3, 7, 7, 2), (3, 3, 2, 6), ((2, 0), (1, 1)), (1, 1)),       # uneven padding
    ((5, 8, 8, 16), (1, 1, 16, 48), ((0, 0), (0, 0)), (1, 1)),
    ((4, 16, 16, 16), (3, 3, 16, 32), ((0, 1), (0, 1)), (2, 2)),  # ResNet's 'SAME', stride 2
    ((4, 16, 16, 16), (1, 1, 16, 32), ((0, 0), (0, 0)), (2, 2)),  # its 1x1 shortcut
    ((3, 9, 10, 3), (3, 3, 3, 7), ((1, 1), (1, 1)), (2, 3)),
    ((1, 5, 5, 4), (3, 3, 4, 16), ((3, 3), (0, 2)), (1, 1)),      # rows of zeros only
    # C a multiple of 16 (the weight gradient's lanes over input channels): 7 outputs
    # (blocks of 4 + 3), 18 vectors of dW rows (6 + 6 + 6); 130 output rows, two row
    # ranges of one image's chunk.
    ((2, 130, 12, 32), (3, 3, 32, 7), ((1, 1), (1, 1)), (1, 1)),
    # Rows split evenly into blocks: 9 pixels of 64 outputs as 5 + 4, 144 dW rows as
    # 18 blocks of 7 and 3 of 6.
    ((2, 5, 9, 16), (3, 3, 16, 64), ((1, 1), (1, 1)), (1, 1)),
    # One image's x and dy (1.2 MB) outgrow the 512 KiB chunk: the weight gradient's
    # Block runs over row ranges of one output row, accumulators carried between them;
    # 40 outputs = whole vectors + (AVX-512) a scalar tail.
    ((2, 70, 66, 24), (3, 3, 24, 40), ((1, 1), (1, 1)), (1, 1)),
]


def _arrays(x_shape, kernel_shape, padding, strides, seed=0):
  kx, kg = jax.random.split(jax.random.PRNGKey(seed))
  (top, bottom), (left, right) = padding
  out_h = (x_shape[1] + top + bottom - kernel_shape[0]) // strides[0] + 1
  out_w = (x_shape[2] + left + right - kernel_shape[1]) // strides[1] + 1
  return (jax.random.normal(kx, x_shape),
          jax.random.normal(kg, (x_shape[0], out_h, out_w, kernel_shape[3])))


WEIGHT_GRAD, FORWARD = 'redconv_conv_weight_grad', 'redconv_conv_forward'


@needs_kernel
@pytest.mark.parametrize('x_shape,kernel_shape,padding,strides', CASES)
def test_forward_and_input_gradient_match_lax(x_shape, kernel_shape, padding, strides):
  x, g = _arrays(x_shape, kernel_shape, padding, strides)
  w = jax.random.normal(jax.random.PRNGKey(3), kernel_shape)
  # The direct kernel (conv.cc) on every case; Winograd's has its own tests below.
  fn = jax.jit(lambda x, w: conv_kernels.forward(x, w, padding, strides, winograd=False))
  assert FORWARD in fn.lower(x, w).as_text()
  expected = conv_kernels.lax_forward(x, w, padding, strides)
  scale = float(jnp.abs(expected).max())
  np.testing.assert_allclose(fn(x, w), expected, rtol=1e-5, atol=1e-5 * scale)
  # With a stride: the forward kernel per phase of the input (no lax convolution left).
  dx = jax.jit(lambda g, w: conv_kernels.input_grad(
      g, w, padding, x_shape, strides, winograd=False if strides == (1, 1) else None))
  assert ' convolution(' not in dx.lower(g, w).compile().as_text()
  got = dx(g, w)
  expected = conv_kernels.lax_input_grad(g, w, padding, x_shape, strides)
  assert got.shape == x_shape
  np.testing.assert_allclose(got, expected, rtol=1e-5,
                             atol=1e-5 * float(jnp.abs(expected).max()))


def _float64_input_grad(out_grad, w, padding, x_shape, strides):
  """The exact input gradient (float64 numpy): every output pixel's gradient scattered
  back through the window that read it."""
  g, w = np.asarray(out_grad, np.float64), np.asarray(w, np.float64)
  (top, _), (left, _) = padding
  (sh, sw), (kh, kw) = strides, w.shape[:2]
  dx = np.zeros((x_shape[0], (g.shape[1] - 1) * sh + kh, (g.shape[2] - 1) * sw + kw,
                 x_shape[3]))
  for v in range(g.shape[1]):
    for u in range(g.shape[2]):
      dx[:, v * sh:v * sh + kh, u * sw:u * sw + kw] += np.einsum('no,ijco->nijc', g[:, v, u], w)
  dx = np.pad(dx, ((0, 0), (0, max(0, top + x_shape[1] - dx.shape[1])),
                   (0, max(0, left + x_shape[2] - dx.shape[2])), (0, 0)))
  return dx[:, top:top + x_shape[1], left:left + x_shape[2]]


@needs_kernel
@pytest.mark.parametrize('x_shape,kernel_shape,padding,strides', [
    ((4, 32, 32, 16), (3, 3, 16, 32), ((0, 1), (0, 1)), (2, 2)),  # ResNet-20's 'SAME'
    ((2, 11, 11, 8), (5, 5, 8, 16), ((2, 2), (2, 2)), (2, 2)),    # 3x3 and 2x3 sub-kernels
    ((3, 9, 10, 3), (3, 3, 3, 7), ((1, 1), (1, 1)), (2, 3)),      # odd sizes, two strides
    ((2, 12, 13, 8), (2, 2, 8, 16), ((0, 0), (0, 0)), (3, 3)),    # phases no tap reaches
    ((2, 9, 9, 4), (3, 3, 4, 16), ((0, 0), (0, 0)), (4, 4)),      # 'VALID': unread pixels
    ((2, 7, 7, 4), (3, 3, 4, 16), ((3, 0), (0, 3)), (2, 2)),      # rows of zeros only
    ((2, 6, 6, 16), (3, 3, 16, 32), ((3, 0), (0, 0)), (1, 1)),    # stride 1, pad > kh - 1
])
def test_input_gradient_by_phases_matches_the_exact_sums(x_shape, kernel_shape, padding,
                                                           strides):
  # A stride (or padding past the kernel) makes the stride-1 pads negative: each phase of
  # the input is the forward kernel on the sub-kernel of the taps that reach it.
  x, g = _arrays(x_shape, kernel_shape, padding, strides)
  w = jax.random.normal(jax.random.PRNGKey(3), kernel_shape)
  dx = jax.jit(lambda g, w: conv_kernels.input_grad(g, w, padding, x_shape, strides))
  text = dx.lower(g, w).compile().as_text()
  # The forward kernel (Winograd's for a whole 3x3 kernel at stride 1), no lax convolution.
  assert 'redconv_conv' in text and ' convolution(' not in text
  got, exact = np.asarray(dx(g, w)), _float64_input_grad(g, w, padding, x_shape, strides)
  assert got.shape == exact.shape == x_shape
  np.testing.assert_allclose(got, exact, rtol=0, atol=2e-6 * np.abs(exact).max())


@needs_kernel
def test_a_batch_of_no_images():
  # Empty arrays go to lax (the kernels' fixed parts over the batch assume work; the
  # direct weight gradient read past its buffers with none, a segfault), and the
  # weight-gradient handlers themselves return zeros for them.
  x, g, padding = jnp.ones((0, 8, 8, 32)), jnp.ones((0, 8, 8, 32)), ((1, 1), (1, 1))
  w = jnp.ones((3, 3, 32, 32))
  assert conv_kernels.forward(x, w, padding).shape == (0, 8, 8, 32)
  assert conv_kernels.input_grad(g, w, padding, x.shape).shape == (0, 8, 8, 32)
  for winograd in (False, None):
    np.testing.assert_array_equal(
        conv_kernels.weight_grad(x, g, w.shape, padding, winograd=winograd), np.zeros(w.shape))
  for target in (WEIGHT_GRAD, WINOGRAD_WEIGHT_GRAD):
    call = conv_kernels._ffi(target, w.shape, padding, (1, 1))
    np.testing.assert_array_equal(jax.jit(call)(x, g), np.zeros(w.shape))


@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
def test_accelerators_lower_lax_convolutions(platform):
  # The CPU's kernels and its phases are lowered for CPU only: an accelerator gets one
  # lax convolution per call, the strided input gradient included.
  x, g = _arrays((4, 16, 16, 16), (3, 3, 16, 32), ((0, 1), (0, 1)), (2, 2))
  w = jnp.ones((3, 3, 16, 32))
  calls = [lambda x, g, w: conv_kernels.forward(x, w, ((0, 1), (0, 1)), (2, 2)),
           lambda x, g, w: conv_kernels.input_grad(g, w, ((0, 1), (0, 1)), x.shape, (2, 2)),
           lambda x, g, w: conv_kernels.weight_grad(x, g, w.shape, ((0, 1), (0, 1)), (2, 2))]
  for call in calls:
    text = jax.jit(call).trace(x, g, w).lower(lowering_platforms=(platform,)).as_text()
    assert 'redconv_conv' not in text and text.count('stablehlo.convolution') == 1


@needs_kernel
@pytest.mark.parametrize('x_shape,kernel_shape,padding,strides', CASES)
def test_matches_lax_weight_gradient(x_shape, kernel_shape, padding, strides):
  x, g = _arrays(x_shape, kernel_shape, padding, strides)
  got = jax.jit(lambda x, g: conv_kernels.weight_grad(x, g, kernel_shape, padding, strides))(x, g)
  expected = conv_kernels.lax_weight_grad(x, g, kernel_shape, padding, strides)
  assert got.shape == expected.shape == kernel_shape
  # Sums of up to ~10^4 products in another order: float32 rounding only.
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))


WINOGRAD, WINOGRAD_WEIGHT_GRAD = 'redconv_conv_winograd', 'redconv_conv_winograd_weight_grad'
WINOGRAD_CASES = [  # (x shape, kernel shape, padding): 3x3, stride 1, C and O whole vectors
    ((8, 14, 14, 32), (3, 3, 32, 64), ((1, 1), (1, 1))),   # the CNN's second layer
    ((3, 7, 9, 16), (3, 3, 16, 32), ((1, 1), (1, 1))),     # odd sizes: half tiles
    ((9, 5, 6, 16), (3, 3, 16, 48), ((0, 2), (2, 0))),     # uneven padding; 9 images
    ((2, 8, 8, 16), (3, 3, 16, 16), ((0, 0), (0, 0))),     # 'VALID': 6x6 outputs
    ((1, 4, 4, 32), (3, 3, 32, 32), ((3, 3), (0, 2))),     # rows of zeros only
    # 64 + 64 channels: groups of 32 tiles, so the 11 x 11 tiles of an image span groups.
    ((2, 21, 22, 64), (3, 3, 64, 64), ((1, 1), (1, 1))),
]


def _float64_conv(x, w, padding):
  """The exact convolution (float64 numpy): the reference both kernels round away from."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  (top, bottom), (left, right) = padding
  xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  kh, kw = w.shape[:2]
  h, wd = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  return sum(np.einsum('nhwc,co->nhwo', xp[:, i:i + h, j:j + wd], w[i, j])
             for i in range(kh) for j in range(kw))


def _float64_weight_grad(x, dy, kernel_shape, padding):
  """The exact weight gradient (float64 numpy) of the stride-1 convolution."""
  x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
  (top, bottom), (left, right) = padding
  xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  h, wd = dy.shape[1:3]
  return np.array([[np.einsum('nhwc,nhwo->co', xp[:, i:i + h, j:j + wd], dy)
                    for j in range(kernel_shape[1])] for i in range(kernel_shape[0])])


@needs_kernel
@pytest.mark.parametrize('x_shape,kernel_shape,padding', WINOGRAD_CASES)
def test_winograd_forward_and_input_gradient_match_the_exact_convolution(
    x_shape, kernel_shape, padding):
  x, g = _arrays(x_shape, kernel_shape, padding, (1, 1))
  w = jax.random.normal(jax.random.PRNGKey(3), kernel_shape)
  fn = jax.jit(lambda x, w: conv_kernels.forward(x, w, padding, winograd=True))
  text = fn.lower(x, w).as_text()
  assert WINOGRAD in text and FORWARD not in text
  got, exact = np.asarray(fn(x, w)), _float64_conv(x, w, padding)
  direct = np.asarray(conv_kernels.forward(x, w, padding, winograd=False))
  assert got.shape == exact.shape
  # Float32 rounding only, of the size of the direct kernel's: 9 * C products per
  # output, summed through transforms with constants 0, +-1 and 1/2.
  scale = np.abs(exact).max()
  np.testing.assert_allclose(got, exact, rtol=0, atol=2e-6 * scale)
  assert np.abs(got - exact).max() <= 4 * np.abs(direct - exact).max() + 1e-6 * scale
  if max(max(pads) for pads in padding) > 2:
    # The input gradient's own padding would be negative: by phases, so not Winograd's.
    with pytest.raises(ValueError, match='negative padding'):
      conv_kernels.input_grad(g, w, padding, x_shape, winograd=True)
    return
  dx = jax.jit(lambda g, w: conv_kernels.input_grad(g, w, padding, x_shape, winograd=True))
  assert WINOGRAD in dx.lower(g, w).as_text()
  expected = conv_kernels.lax_input_grad(g, w, padding, x_shape)
  np.testing.assert_allclose(dx(g, w), expected, rtol=1e-5,
                             atol=1e-5 * float(jnp.abs(expected).max()))


@needs_kernel
@pytest.mark.parametrize('x_shape,kernel_shape,padding', WINOGRAD_CASES + [
    # ResNet-20's second stage at its batch: 64 tiles of 32 channels a group, 2048 tiles
    # summed per part.
    ((128, 16, 16, 32), (3, 3, 32, 32), ((1, 1), (1, 1)))])
def test_winograd_weight_gradient_matches_the_exact_sums(x_shape, kernel_shape, padding):
  x, g = _arrays(x_shape, kernel_shape, padding, (1, 1))
  fn = jax.jit(lambda x, g: conv_kernels.weight_grad(x, g, kernel_shape, padding,
                                                     winograd=True))
  text = fn.lower(x, g).as_text()
  assert WINOGRAD_WEIGHT_GRAD in text and WEIGHT_GRAD not in text.replace(
      WINOGRAD_WEIGHT_GRAD, '')
  got = np.asarray(fn(x, g))
  exact = _float64_weight_grad(x, g, kernel_shape, padding)
  direct = np.asarray(conv_kernels.weight_grad(x, g, kernel_shape, padding, winograd=False))
  assert got.shape == exact.shape == kernel_shape
  # Float32 rounding of sums over every pixel of the batch, of the size of the direct
  # kernel's (measured 0.7-1.9x of it): a wrong transform or a lost tile is off by the
  # size of the gradient itself.
  scale = np.abs(exact).max()
  np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5 * scale)
  assert np.abs(got - exact).max() <= 4 * np.abs(direct - exact).max() + 1e-7 * scale


@needs_kernel
def test_winograd_outputs_do_not_depend_on_the_batch_around_them():
  # Every output is one tile's sums in one order, whichever group, part or thread holds
  # the tile: an image's outputs are the same bits alone or among others, every call.
  padding = ((1, 1), (1, 1))
  x, _ = _arrays((9, 21, 22, 64), (3, 3, 64, 64), padding, (1, 1))
  w = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 64, 64))
  fn = jax.jit(lambda x, w: conv_kernels.forward(x, w, padding, winograd=True))
  batch = np.asarray(fn(x, w))
  np.testing.assert_array_equal(np.asarray(fn(x, w)), batch)
  for i in (0, 4, 8):
    np.testing.assert_array_equal(np.asarray(fn(x[i:i + 1], w)), batch[i:i + 1])


@needs_kernel
def test_winograd_is_the_default_where_it_pays():
  lanes = conv_kernels.vector_lanes()
  # 32 or more channels on either side, 3x3 at stride 1, whole vectors: Winograd's.
  assert conv_kernels.winograd_applies((3, 3, 32, 64), (1, 1))
  assert conv_kernels.winograd_applies((3, 3, 64, 32), (1, 1))
  assert conv_kernels.winograd_applies((3, 3, 32, 16), (1, 1))
  # 16 and 16 (the transforms cost more than they save), 5x5, a stride, a partial vector.
  assert not conv_kernels.winograd_applies((3, 3, 16, 16), (1, 1))
  assert not conv_kernels.winograd_applies((5, 5, 32, 64), (1, 1))
  assert not conv_kernels.winograd_applies((3, 3, 32, 64), (2, 2))
  assert not conv_kernels.winograd_applies((3, 3, 32, 64 + lanes // 2), (1, 1))
  x = jnp.ones((2, 14, 14, 32))
  w = jnp.ones((3, 3, 32, 64))
  padding = ((1, 1), (1, 1))
  assert WINOGRAD in jax.jit(lambda x, w: conv_kernels.forward(x, w, padding)).lower(
      x, w).as_text()
  small = jax.jit(lambda x, w: conv_kernels.forward(x, w, padding)).lower(
      jnp.ones((2, 14, 14, 16)), jnp.ones((3, 3, 16, 16))).as_text()
  assert FORWARD in small and WINOGRAD not in small
  # The weight gradient by the same rule.
  dy = jnp.ones((2, 14, 14, 64))
  grad = jax.jit(lambda x, dy: conv_kernels.weight_grad(x, dy, (3, 3, 32, 64), padding))
  assert WINOGRAD_WEIGHT_GRAD in grad.lower(x, dy).as_text()
  small = jax.jit(lambda x, dy: conv_kernels.weight_grad(x, dy, (3, 3, 16, 16), padding))
  text = small.lower(jnp.ones((2, 14, 14, 16)), jnp.ones((2, 14, 14, 16))).as_text()
  assert WEIGHT_GRAD in text and WINOGRAD not in text


@needs_kernel
def test_direct_kernels_on_request(monkeypatch):
  # REDCONV_CONV_KERNELS=direct: the compiled direct kernel, read when tracing.
  monkeypatch.setenv('REDCONV_CONV_KERNELS', 'direct')
  x, w, padding = jnp.ones((2, 14, 14, 32)), jnp.ones((3, 3, 32, 64)), ((1, 1), (1, 1))
  text = jax.jit(lambda x, w: conv_kernels.forward(x, w, padding)).lower(x, w).as_text()
  assert FORWARD in text and WINOGRAD not in text
  dy = jnp.ones((2, 14, 14, 64))
  text = jax.jit(lambda x, dy: conv_kernels.weight_grad(x, dy, (3, 3, 32, 64), padding)).lower(
      x, dy).as_text()
  assert WEIGHT_GRAD in text and WINOGRAD not in text


@needs_kernel
@pytest.mark.parametrize('kernel_shape,strides', [
    ((5, 5, 32, 64), (1, 1)), ((3, 3, 32, 64), (2, 2)), ((3, 3, 12, 64), (1, 1))])
def test_winograd_where_it_cannot_apply_is_a_clear_error(kernel_shape, strides):
  x = jnp.ones((2, 14, 14, kernel_shape[2]))
  with pytest.raises(ValueError, match=r'\[3, 3, C, O\] kernel at stride 1'):
    conv_kernels.forward(x, jnp.ones(kernel_shape), ((1, 1), (1, 1)), strides, winograd=True)
  g = jnp.ones((2, 14 // strides[0], 14 // strides[1], kernel_shape[3]))
  with pytest.raises(ValueError, match=r'weight_grad\(winograd=True\) needs a \[3, 3, C, O\]'):
    conv_kernels.weight_grad(x, g, kernel_shape, (((kernel_shape[0] - 1) // 2,) * 2,) * 2,
                             strides, winograd=True)
  if strides != (1, 1):  # the input gradient with a stride is by phases: no Winograd either
    g = jnp.ones((2, 7, 7, kernel_shape[3]))
    with pytest.raises(ValueError, match='input_grad\\(winograd=True\\)'):
      conv_kernels.input_grad(g, jnp.ones(kernel_shape), ((0, 1), (0, 1)), x.shape, strides,
                              winograd=True)


@needs_kernel
@pytest.mark.parametrize('winograd', [False, True])
def test_bit_reproducible(winograd):
  # Fixed parts summed in a fixed order: which pool thread ran which part is irrelevant.
  shape, padding, strides = (3, 3, 32, 64), ((1, 1), (1, 1)), (1, 1)
  x, g = _arrays((32, 14, 14, 32), shape, padding, strides)
  fn = jax.jit(lambda x, g: conv_kernels.weight_grad(x, g, shape, padding, strides,
                                                     winograd=winograd))
  first = np.asarray(fn(x, g))
  for _ in range(3):
    np.testing.assert_array_equal(np.asarray(fn(x, g)), first)


@needs_kernel
def test_per_example_gradients_under_vmap():
  shape, padding, strides = (3, 3, 2, 16), ((1, 1), (1, 1)), (1, 1)
  x, g = _arrays((4, 6, 6, 2), shape, padding, strides)

  def one(x, g):  # one example: a batch of 1
    return conv_kernels.weight_grad(x[None], g[None], shape, padding, strides)
  got = jax.jit(jax.vmap(one))(x, g)
  expected = jnp.stack([conv_kernels.lax_weight_grad(x[i:i + 1], g[i:i + 1], shape, padding,
                                                     strides) for i in range(4)])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_other_dtypes_take_lax_gradient():
  shape, padding, strides = (3, 3, 4, 16), ((1, 1), (1, 1)), (1, 1)
  x, g = (a.astype(jnp.bfloat16) for a in _arrays((2, 6, 6, 4), shape, padding, strides))
  fn = jax.jit(lambda x, g: conv_kernels.weight_grad(x, g, shape, padding, strides))
  assert WEIGHT_GRAD not in fn.lower(x, g).as_text()
  np.testing.assert_array_equal(
      fn(x, g), conv_kernels.lax_weight_grad(x, g, shape, padding, strides))


@needs_kernel
def test_build_is_cached_per_machine(tmp_path, monkeypatch):
  monkeypatch.setenv('REDCONV_KERNEL_CACHE', str(tmp_path))
  path = conv_kernels.build()
  assert os.path.dirname(path) == str(tmp_path) and os.path.exists(path)
  built_at = os.stat(path).st_mtime_ns
  assert conv_kernels.build() == path  # found, not rebuilt
  assert os.stat(path).st_mtime_ns == built_at
  assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]  # no leftovers


def test_no_compiler_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv('REDCONV_KERNEL_CACHE', str(tmp_path))
  monkeypatch.setattr(conv_kernels, '_compiler', lambda: None)
  with pytest.raises(RuntimeError, match='no C.. compiler found'):
    conv_kernels.build()


def test_a_failed_build_names_the_source_and_keeps_nothing(tmp_path, monkeypatch):
  broken = tmp_path / 'broken.cc'
  broken.write_text('this is not C++\n')
  monkeypatch.setenv('REDCONV_KERNEL_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(conv_kernels, 'SOURCES', (str(broken),))
  if conv_kernels._compiler() is None:
    pytest.skip('no C++ compiler here')
  with pytest.raises(RuntimeError, match='could not build .*broken.cc'):
    conv_kernels.build()
  assert list((tmp_path / 'cache').iterdir()) == []


@pytest.mark.parametrize('cause', ['no_compiler', 'env'])
def test_fallback_is_lax_gradient(cause, monkeypatch):
  # No compiler: one warning, then lax's gradient. REDCONV_CONV_KERNELS=lax: silently.
  if cause == 'env':
    monkeypatch.setenv('REDCONV_CONV_KERNELS', 'lax')
  else:
    monkeypatch.setattr(conv_kernels, '_compiler', lambda: None)
    monkeypatch.setenv('REDCONV_KERNEL_CACHE', '/nonexistent/redconv-test-cache')
  conv_kernels.available.cache_clear()
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      assert not conv_kernels.available()
    assert len(caught) == (1 if cause == 'no_compiler' else 0)
    if caught:
      assert 'no C++ compiler found' in str(caught[0].message)
    shape, padding, strides = (3, 3, 4, 16), ((1, 1), (1, 1)), (1, 1)
    x, g = _arrays((2, 6, 6, 4), shape, padding, strides)
    fn = jax.jit(lambda x, g: conv_kernels.weight_grad(x, g, shape, padding, strides))
    assert WEIGHT_GRAD not in fn.lower(x, g).as_text()
    fn = jax.jit(lambda x, w: conv_kernels.forward(x, w, padding, strides))
    assert FORWARD not in fn.lower(x, jnp.zeros(shape)).as_text()
  finally:
    monkeypatch.undo()
    conv_kernels.available.cache_clear()
    conv_kernels.available()  # registered again for the other tests of this process


def test_the_command_line_says_which_kernels():
  env = {**os.environ, 'REDCONV_CONV_KERNELS': 'lax'}
  result = subprocess.run([sys.executable, '-m', 'models.conv_kernels'], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "lax's convolutions" in result.stdout
  if conv_kernels.available():
    result = subprocess.run([sys.executable, '-m', 'models.conv_kernels'],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'compiled convolution kernels (' in result.stdout
    assert f'({conv_kernels.vector_lanes()}-float vectors' in result.stdout


def test_the_library_is_built_for_this_cpu():
  # -march=native: AVX-512 machines get 16-float vectors, all others 8 (their blocks
  # differ: conv_common.h), whatever machine built the cache's other libraries.
  if not conv_kernels.available():
    pytest.skip('no compiled kernels on this machine')
  flags = conv_kernels._cpu_features().split()  # the CPU line the build's cache key uses
  assert conv_kernels.vector_lanes() == (16 if 'avx512f' in flags else 8)
