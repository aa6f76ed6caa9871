"""FlipAveraged: mirror averaging in evaluation only; the compute dtype reaches the
wrapped model."""
import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from models import build_model
from models.flip_averaged import FlipAveraged


class _Linear(nn.Module):
  """Not mirror-symmetric, so flip averaging changes its output."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_flip_averaging_only_in_evaluation():
  model = FlipAveraged(_Linear())
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  inner = {'params': variables['params']['model']}
  plain = _Linear().apply(inner, x)
  mirrored = _Linear().apply(inner, x[:, :, ::-1])
  chex.assert_trees_all_close(model.apply(variables, x, train=False), (plain + mirrored) / 2,
                              atol=1e-6)
  chex.assert_trees_all_close(model.apply(variables, x, train=True), plain, atol=1e-6)
  off = FlipAveraged(_Linear(), enabled=False)
  chex.assert_trees_all_close(off.apply(variables, x, train=False), plain, atol=1e-6)


def test_compute_dtype_reaches_the_wrapped_model():
  from train.loop import _with_compute_dtype  # pylint: disable=g-import-not-at-top
  model = FlipAveraged(build_model(dict(name='fastnet', stem_width=0, widths=(8, 8, 8)),
                                   num_classes=10))
  bf16 = _with_compute_dtype(model, 'bfloat16')
  assert bf16.dtype == jnp.bfloat16 and bf16.model.dtype == jnp.bfloat16
  assert model.model.dtype == jnp.float32  # the original is left alone
  x = jnp.zeros((2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  # Same parameters (names, float32) for both; the convolutions run in bfloat16.
  chex.assert_trees_all_equal_structs(variables, bf16.init(jax.random.PRNGKey(0), x))

  def conv_dtypes(module):
    _, state = module.apply(variables, x, capture_intermediates=True)
    return {leaf.dtype for path, v in flax.traverse_util.flatten_dict(
        state['intermediates']).items() if 'Conv_0' in path
            for leaf in jax.tree_util.tree_leaves(v)}
  assert conv_dtypes(bf16) == {jnp.dtype(jnp.bfloat16)}
  assert conv_dtypes(model) == {jnp.dtype(jnp.float32)}
