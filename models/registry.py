"""Model registry: a config names its model (`config.model.name = 'cnn'`)."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn

from registry import Registry

MODELS = Registry('model')


def build_model(model_config: Mapping[str, Any], **overrides: Any) -> nn.Module:
  """Builds the registered module `model_config['name']` from the other fields.

  Construction stays separate from config: modules take plain keyword arguments and
  tests build them directly; this factory only maps a config onto them.
  """
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  kwargs.update(overrides)
  return MODELS.get(name)(**kwargs)
