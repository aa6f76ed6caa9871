import pytest

from registry import Registry


def test_register_and_get():
  reg = Registry('thing')
  @reg.register('a')
  def a():
    return 1
  assert reg.get('a') is a
  assert 'a' in reg and reg.names() == ['a']


def test_duplicate_name_raises():
  reg = Registry('thing')
  reg.register('a')(object())
  with pytest.raises(ValueError, match="thing 'a' is registered twice"):
    reg.register('a')(object())


def test_unknown_name_lists_valid_names():
  reg = Registry('model')
  reg.register('mlp')(object())
  reg.register('cnn')(object())
  with pytest.raises(KeyError, match="unknown model 'resnet'; valid names: cnn, mlp"):
    reg.get('resnet')
