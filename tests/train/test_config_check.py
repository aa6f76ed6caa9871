"""Config checks before any work: each failure names the field, the value, what is expected."""
import ml_collections
import pytest

from errors import ConfigError, UserError
from experiments import dense_vs_conv, segment_semantic
from train.config_check import check_config


def _config(**overrides):
  config = dense_vs_conv.get_config('runlocal')
  for dotted, value in overrides.items():
    *parents, field = dotted.split('__')
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  return config


def test_every_experiment_variant_passes():
  from experiments import (cifar10, instance_coco, instance_shapes,  # noqa: F401
                           segment_binary)
  for module, variants in [(dense_vs_conv, (None, 'runlocal')),
                           (cifar10, ('cpu', 'gpu', 'runlocal')),
                           (segment_semantic, ('shapes', 'camvid', 'runlocal')),
                           (segment_binary, ('shapes', 'isbi', 'runlocal')),
                           (instance_shapes, ('shapes', 'runlocal')),
                           (instance_coco, ('coco128', 'runlocal'))]:
    for variant in variants:
      check_config(module.get_config(variant))


@pytest.mark.parametrize('overrides, message', [
    ({'batch_size': 0}, r'config.batch_size=0; expected a positive integer'),
    ({'batch_size': -8}, r'config.batch_size=-8; expected a positive integer'),
    ({'num_epochs': 0}, r'config.num_epochs=0; expected a positive integer'),
    ({'eval_batch_size': 0}, r'config.eval_batch_size=0; expected a positive integer'),
    ({'log_every_steps': 0}, r'config.log_every_steps=0; expected a positive integer'),
    ({'train_examples': -1}, r'config.train_examples=-1; expected an integer >= 0'),
    ({'optimizer__learning_rate': 0.0},
     r'config.optimizer.learning_rate=0.0; expected a positive number'),
    ({'optimizer__warmup_steps': -5}, r'config.optimizer.warmup_steps=-5; expected an integer'),
    ({'optimizer__name': 'adam'},
     r"config.optimizer.name='adam'; expected one of adamw, sgd, nesterov"),
    ({'compute_dtype': 'int8'}, r"config.compute_dtype='int8'; expected '' \(float32\)"),
    ({'models__cnn__name': 'cnnn'}, r"config.models.cnn.name='cnnn'; expected a registered "
     r'model: .*cnn, .*mlp'),
    ({'models__cnn__name': 'mlp'}, r"config.models.cnn.convs_per_block: model 'mlp' \(MLP\) has "
     'no such field; its fields: dropout_rate, dtype, hidden_widths, num_classes'),
    ({'model_names': ('mlp', 'rnn')}, r"config.model_names has 'rnn'; expected names from "
     'config.models: cnn, mlp'),
    ({'data__source': 'fashion'}, r"config.data.source='fashion'; expected a registered data "
     r'source: .*fashion_mnist_idx'),
    ({'augment': 'flip_lr|rotat(3)'}, r"config.augment='flip_lr\|rotat\(3\)': .*unknown "
     "augmentation op 'rotat'"),
])
def test_a_bad_value_names_field_value_and_expectation(overrides, message):
  with pytest.raises(ConfigError, match=message) as raised:
    check_config(_config(**overrides))
  assert isinstance(raised.value, UserError) and isinstance(raised.value, ValueError)


def test_fields_of_other_experiments_are_checked_when_present():
  config = segment_semantic.get_config('runlocal')
  config.eval_every_epochs = 0
  with pytest.raises(ConfigError, match='config.eval_every_epochs=0; expected a positive'):
    check_config(config)


def test_a_plain_dict_with_only_the_loop_fields_passes():
  check_config({'seed': 0, 'batch_size': 4, 'eval_batch_size': 4, 'num_epochs': 1,
                'optimizer': {'name': 'sgd', 'learning_rate': 0.1}})
  with pytest.raises(ConfigError, match='config.seed=1.5; expected an integer'):
    check_config(ml_collections.ConfigDict({'seed': 1.5}))


@pytest.mark.parametrize('config, message', [
    ({'model': {'name': 'cnn', 'dtype': 'bfloat16'}},
     r"config.model.dtype='bfloat16': the compute dtype has one field, config.compute_dtype"),
    ({'models': {'cnn': {'name': 'cnn', 'dtype': 'float32'}}},
     r"config.models.cnn.dtype='float32': the compute dtype has one field"),
    ({'preprocess': {'mean': 0.5, 'std': 0.0}},
     r'config.preprocess.std=0.0; expected a positive number or one per channel'),
    ({'preprocess': {'mean': (0.5, 'a'), 'std': 1.0}},
     r"config.preprocess.mean=\(0.5, 'a'\); expected a number or one number per channel"),
    ({'evals': {'shift': {'type': 'no_such_evaluator'}}},
     r"config.evals.shift.type='no_such_evaluator'; expected a registered evaluator"),
])
def test_one_compute_dtype_field_normalisation_and_evaluators_are_checked(config, message):
  with pytest.raises(ConfigError, match=message):
    check_config(ml_collections.ConfigDict(config))
