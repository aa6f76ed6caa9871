"""One small decorator registry for models, data sources, augmentation ops, evaluators.

Lives at the top level so `models` and `data` can both use it without importing each
other (data flows `data -> train <- models`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator


class Registry:
  """Maps a name to a constructor; raises on a duplicate or unknown name.

  >>> MODELS = Registry('model')
  >>> @MODELS.register('mlp')
  ... class MLP: ...
  >>> MODELS.get('mlp') is MLP
  True
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def wrap(obj: Any) -> Any:
      if name in self._entries:
        raise ValueError(f'{self.kind} {name!r} is registered twice '
                         f'({self._entries[name]!r} and {obj!r}).')
      self._entries[name] = obj
      return obj
    return wrap

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise KeyError(f'unknown {self.kind} {name!r}; valid names: '
                     f'{", ".join(sorted(self._entries))}.')
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))
