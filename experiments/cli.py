"""The shared command line of every experiment: `--workdir` and `--config.*` overrides.

Expected user errors (see `is_user_error`) print one or two lines to stderr, starting
`error: `, and exit with status 2; `--debug` shows their traceback. Anything else is
a bug and keeps its traceback (exit status 1).
"""
from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from typing import Callable, NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

import allocator
import xla_cpu
from errors import UserError

# What the command line treats as the user's mistake, beyond a bad flag or config file
# (any error while the flags are parsed): UserError covers ConfigError, a changed
# config, unusable checkpoints, a diverged loss and the data sources' format errors;
# the OSErrors name a path the user gave.
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, FileExistsError)
# Any other OSError is the user's only for these causes (a full disk, a quota, a
# read-only filesystem), which no code change fixes.
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
EXIT_USER_ERROR = 2


def is_user_error(error: BaseException) -> bool:
  return isinstance(error, USER_ERRORS) or (isinstance(error, OSError)
                                            and error.errno in USER_ERRNOS)


def _message(error: BaseException) -> str:
  """The readable text of an exception: KeyError and ml_collections' AttributeError
  wrap their message in a repr (quotes, escaped newlines); unwrap it."""
  while isinstance(error, (KeyError, AttributeError)) and error.args:
    inner = error.args[0]
    if isinstance(inner, BaseException):
      error = inner
      continue
    return ' '.join(str(inner).split())
  return str(error).strip()


def _innermost(error: BaseException) -> BaseException:
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  return error


def _fail(message: str, error: BaseException) -> NoReturn:
  # (read from sys.argv too: the flags may be what failed to parse)
  if '--debug' in sys.argv or (flags.FLAGS.is_parsed() and flags.FLAGS['debug'].value):
    traceback.print_exception(error)
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _field_message(argv: list[str], error: BaseException) -> str:
  """A bad `--config.<field>` names the flag and the closest field."""
  text = _message(error)
  match = re.match(r"'?([\w]+)'? Did you mean \"?([\w]+)\"?", text)
  missing = match.group(1) if match else text.strip("'")
  for arg in argv:
    path = arg.split('=', 1)[0]
    if path.startswith('--config.') and missing in path[len('--config.'):].split('.'):
      hint = f"; did you mean '{match.group(2)}'?" if match else '.'
      return f"{arg}: the config has no field '{missing}'{hint}"
  return text


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with every failure (unknown field, bad value, missing or broken
  config file) reported as one line instead of chained tracebacks."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # unknown flag, bad value, get_config raised
    cause = _innermost(e)
    if cause is e:
      _fail(f'{_message(e)} (see --helpshort)', e)
    flag = str(e).split(': ', 1)[0]  # 'flag --config=...'
    _fail(f'{flag}: {_message(cause)}', e)
  except (KeyError, AttributeError) as e:  # --config.<unknown field>
    _fail(_field_message(argv, e), e)
  except Exception as e:  # pylint: disable=broad-except  (the config file itself)
    for arg in argv:
      path = arg.split('=', 1)[1].split(':', 1)[0] if arg.startswith('--config=') else None
      if path and not os.path.isfile(path):
        _fail(f'{arg}: no such file (relative to {os.getcwd()}).', e)
    _fail(f"--config: {type(e).__name__}: {' '.join(_message(e).split())}", e)


def _check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f'--workdir={workdir} is a file, not a directory; pass a '
                             'directory (it is created if missing).')


def run(config_file: str, main: Callable[[ml_collections.ConfigDict, str], object],
        default_workdir: str) -> None:
  """Parses `--config` (defaulting to `config_file`'s get_config) and `--workdir`, runs main.

  Example: `python -m experiments.dense_vs_conv --workdir=/tmp/dvc --config.num_epochs=3`.
  Before `main` does any work: the config is checked (train/config_check.py) and, if
  the workdir holds checkpoints, compared with theirs (train/run_record.py).
  Runs with the mimalloc allocator (allocator.py); `python -m experiments.<name>` has
  re-executed itself with it already, any other launch does so here.
  """
  allocator.preload()
  config_flags.DEFINE_config_file('config', config_file, 'Experiment configuration.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', default_workdir, 'Where checkpoints, logs and reports go.')
  flags.DEFINE_bool('allow_config_change', False,
                    'Resume the checkpoints in --workdir although the config that made '
                    'them differs in fields that change the result (the differences are '
                    'printed and recorded with the new checkpoints).')
  flags.DEFINE_bool('debug', False, 'Print the traceback of expected user errors too.')

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    # Quiet TensorFlow's C++ start-up chatter and absl's backend probing at INFO;
    # tf.data runs on the CPU only.
    logging.set_verbosity(logging.WARNING)
    if flags.FLAGS.debug:
      print(allocator.describe(), file=sys.stderr)
      print(xla_cpu.describe(), file=sys.stderr)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
    # pylint: disable=g-import-not-at-top
    from train import config_check, distributed, run_record
    import tasks.evaluators  # noqa: F401  (fills the registry config.evals names)
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    try:
      if flags.FLAGS.allow_config_change:
        with config.unlocked():
          config.allow_config_change = True
      _check_workdir(workdir)
      config_check.check_config(config)
      # Before JAX touches a device: joins a multi-process run if REDCONV_* say so.
      distributed.initialize(config.get('distributed'))
      run_record.check_workdir(config, workdir)
      main(config, workdir)
    except Exception as e:  # pylint: disable=broad-except
      if not is_user_error(e):
        raise
      _fail(_message(e), e)

  app.run(_main, argv=sys.argv, flags_parser=_parse_flags)

