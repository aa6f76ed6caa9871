"""create_train_state: initial variables, and an `init_fn` that replaces them (pretraining)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from models.resnet50 import ResNet50
from train.state import create_train_state


def test_init_fn_sets_the_starting_variables_of_every_collection():
  model = ResNet50(stage_blocks=(1, 1, 1, 1), freeze_at=1)

  def init_fn(variables):
    variables = dict(variables)
    variables['params'] = jax.tree_util.tree_map(jnp.ones_like, variables['params'])
    variables['frozen'] = jax.tree_util.tree_map(lambda x: jnp.full_like(x, 2.0),
                                                 variables['frozen'])
    return variables

  tx = optax.sgd(0.1, momentum=0.9)
  state = jax.jit(lambda: create_train_state(model, tx, (1, 32, 32, 3), jax.random.PRNGKey(0),
                                             init_fn))()
  leaves = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
  np.testing.assert_array_equal(leaves(state.params), 1.0)
  np.testing.assert_array_equal(leaves(state.model_state['frozen']), 2.0)
