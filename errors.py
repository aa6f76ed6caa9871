"""Errors the user can fix: the command line prints their message, not a traceback.

Lives at the top level (like registry.py) so `data`, `train` and `experiments` can all
raise them without importing each other. Raise a `UserError` (or a subclass) when the
cause is the input: a config value, a data file, the state of the workdir. Leave
bugs as ordinary exceptions so their traceback shows where the code went wrong.
`experiments/cli.py` lists every exception type it treats as the user's.
"""
from __future__ import annotations


class UserError(Exception):
  """Bad input the user can fix; the message names the field or file and what is expected."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work (a ValueError too, for callers that catch those)."""
