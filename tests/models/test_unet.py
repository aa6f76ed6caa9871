"""U-Net: output shapes for sizes not divisible by 2^depth, options, bf16 compute."""
import chex
import jax
import jax.numpy as jnp
import pytest

from models import build_model
from models.unet import UNet, pad_to_multiple


@pytest.mark.parametrize('shape', [(2, 37, 50, 3), (1, 16, 16, 1), (1, 5, 9, 3)])
def test_output_matches_the_input_size_for_odd_sides(shape):
  model = UNet(num_classes=4, depth=3, base_width=4)
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  variables = model.init(jax.random.PRNGKey(1), x)
  logits = model.apply(variables, x)
  chex.assert_shape(logits, shape[:3] + (4,))
  assert logits.dtype == jnp.float32


def test_padding_is_cropped_back_so_pixels_keep_their_position():
  x = jnp.arange(2 * 5 * 7 * 1, dtype=jnp.float32).reshape(2, 5, 7, 1)
  padded, (h, w) = pad_to_multiple(x, 4)
  chex.assert_shape(padded, (2, 8, 8, 1))
  chex.assert_trees_all_equal(padded[:, :h, :w], x)
  # Mirror padding: the first padded row repeats the row above the last one.
  chex.assert_trees_all_equal(padded[:, 5, :7], x[:, 3])


@pytest.mark.parametrize('norm,upsample', [('batch', 'transpose'), ('group', 'resize'),
                                           ('none', 'transpose')])
def test_options_train_mode_with_dropout(norm, upsample):
  model = build_model({'name': 'unet', 'num_classes': 1, 'depth': 2, 'base_width': 8,
                       'norm': norm, 'upsample': upsample, 'dropout_rate': 0.5})
  x = jnp.ones((2, 12, 10, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  mutable = ['batch_stats'] if norm == 'batch' else []
  out = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)},
                    mutable=mutable)
  logits = out[0]  # (logits, updated collections)
  chex.assert_shape(logits, (2, 12, 10, 1))
  assert ('batch_stats' in variables) == (norm == 'batch')


def test_bad_options_name_the_field():
  x = jnp.ones((1, 8, 8, 3))
  with pytest.raises(ValueError, match='norm='):
    UNet(norm='layer').init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='upsample='):
    UNet(upsample='bicubic').init(jax.random.PRNGKey(0), x)


def test_bfloat16_compute_gives_float32_logits_close_to_float32():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 20, 20, 3))
  model = UNet(num_classes=3, depth=2, base_width=8, norm='none')
  variables = model.init(jax.random.PRNGKey(1), x)
  full = model.apply(variables, x)
  half = model.clone(dtype=jnp.bfloat16).apply(variables, x)
  assert half.dtype == jnp.float32
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda p: p.dtype == jnp.float32, variables['params']))
  chex.assert_trees_all_close(half, full, atol=0.1 * float(jnp.abs(full).max()) + 0.05)
