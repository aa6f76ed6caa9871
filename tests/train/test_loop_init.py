"""train_and_evaluate(init_fn=...): the run starts from the variables init_fn returns."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from models.cnn import CNN
from tasks.classification.task import classification_task
from train.loop import train_and_evaluate
from tests.toy_data import band_source


def test_the_run_starts_from_init_fns_variables(tmp_path):
  # The config check refuses a zero learning rate; 1e-30 leaves float32 weights of 0.5
  # exactly as they are after one step, so they show the starting variables.
  config = ml_collections.ConfigDict(dict(
      seed=0, batch_size=16, eval_batch_size=32, num_epochs=1, log_every_steps=1,
      progress_bar=False, optimizer=dict(name='sgd', learning_rate=1e-30, momentum=0.9)))
  seen = []

  def init_fn(variables):
    seen.append(sorted(variables))
    return {**variables, 'params': jax.tree_util.tree_map(lambda x: jnp.full_like(x, 0.5),
                                                          variables['params'])}

  result = train_and_evaluate(
      config, str(tmp_path), model=CNN(num_classes=3, widths=(4, 8), dense_width=16),
      train_source=band_source(32, 0), eval_source=band_source(16, 1),
      task=classification_task(mean=0.3, std=0.3), max_steps=1, init_fn=init_fn)
  assert seen and 'params' in seen[0]
  leaves = jax.tree_util.tree_leaves(result.state.params)
  np.testing.assert_array_equal(np.concatenate([np.ravel(x) for x in leaves]), 0.5)
