"""Second-stage heads: the matmul 2x upsampling equals flax's strided transposed conv."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from models.mask_rcnn.heads import MaskHead, Upsample2x


def test_upsample2x_equals_conv_transpose_with_the_same_parameters():
  x = jax.random.normal(jax.random.key(1), (3, 5, 6, 4))
  reference = nn.ConvTranspose(7, (2, 2), strides=(2, 2))
  variables = reference.init(jax.random.key(0), x)
  ours = Upsample2x(7)
  # Same names, shapes and initial values from the same key.
  chex.assert_trees_all_close(ours.init(jax.random.key(0), x), variables)
  variables = jax.tree.map(lambda v: v + jax.random.normal(jax.random.key(2), v.shape),
                           variables)  # a non-zero bias too
  out = ours.apply(variables, x)
  chex.assert_shape(out, (3, 10, 12, 7))
  chex.assert_trees_all_close(out, reference.apply(variables, x), atol=1e-5)
  grads = [jax.grad(lambda v, m=m: jnp.sum(jnp.sin(m.apply(v, x))))(variables)
           for m in (ours, reference)]
  chex.assert_trees_all_close(*grads, atol=1e-4)


def test_mask_head_shape():
  head = MaskHead(num_classes=3, width=8)
  x = jnp.ones((5, 14, 14, 16))
  out = head.apply(head.init(jax.random.key(0), x), x)
  chex.assert_shape(out, (5, 28, 28, 3))
