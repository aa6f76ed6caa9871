"""allocator.py: when a command re-executes itself with mimalloc preloaded, and that the
re-executed process really maps libmimalloc."""
import os
import subprocess
import sys
from importlib import metadata

import pytest

import allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = '/site-packages/cmeel.prefix/lib/libmimalloc.so'


def test_a_plain_linux_environment_preloads_the_library_once():
  env = allocator.preload_environment({'PATH': '/bin'}, 'linux', LIB)
  assert env == {'PATH': '/bin', 'LD_PRELOAD': LIB, allocator.GUARD: '1'}
  assert allocator.preload_environment(env, 'linux', LIB) is None


@pytest.mark.parametrize('environ, platform, library', [
    ({allocator.GUARD: '1'}, 'linux', LIB),  # already re-executed (even if LD_PRELOAD went)
    ({'REDCONV_ALLOCATOR': 'system'}, 'linux', LIB),  # the opt-out
    ({'REDCONV_ALLOCATOR': ' System '}, 'linux', LIB),
    ({'LD_PRELOAD': '/usr/lib/libtcmalloc_minimal.so.4'}, 'linux', LIB),  # the user's own
    ({}, 'linux', None),  # the wheel is not installed
    ({}, 'darwin', LIB),  # no LD_PRELOAD outside Linux
    ({}, 'win32', LIB),
])
def test_no_preload(environ, platform, library):
  assert allocator.preload_environment(environ, platform, library) is None


def test_other_opt_out_values_keep_mimalloc():
  env = allocator.preload_environment({'REDCONV_ALLOCATOR': 'mimalloc', 'LD_PRELOAD': ' '},
                                      'linux', LIB)
  assert env is not None and env['LD_PRELOAD'] == LIB


def _record_execve(monkeypatch, library):
  calls = []
  monkeypatch.setattr(allocator, 'library_path', lambda: library)
  monkeypatch.setattr(allocator.sys, 'platform', 'linux')
  monkeypatch.setattr(allocator.os, 'execve', lambda *args: calls.append(args))
  for name in ('LD_PRELOAD', allocator.GUARD, allocator.OPT_OUT):
    monkeypatch.delenv(name, raising=False)
  return calls


def test_preload_reexecutes_the_same_command_line(monkeypatch):
  calls = _record_execve(monkeypatch, LIB)
  monkeypatch.setattr(allocator.sys, 'orig_argv',
                      ['python3', '-X', 'utf8', '-m', 'experiments.cifar10', '--workdir=w'])
  allocator.preload()
  [(executable, argv, env)] = calls
  assert executable == sys.executable
  assert argv == [sys.executable, '-X', 'utf8', '-m', 'experiments.cifar10', '--workdir=w']
  assert env['LD_PRELOAD'] == LIB and env[allocator.GUARD] == '1'
  assert env['PATH'] == os.environ['PATH']


@pytest.mark.parametrize('library, environ', [
    (None, {}), (LIB, {'REDCONV_ALLOCATOR': 'system'}), (LIB, {allocator.GUARD: '1'})])
def test_preload_goes_on_without_reexecuting(monkeypatch, library, environ):
  calls = _record_execve(monkeypatch, library)
  for name, value in environ.items():
    monkeypatch.setenv(name, value)
  allocator.preload()
  assert calls == []


def test_a_failed_reexec_goes_on_with_the_system_allocator(monkeypatch):
  _record_execve(monkeypatch, LIB)

  def fail(*args):
    raise PermissionError('not executable')
  monkeypatch.setattr(allocator.os, 'execve', fail)
  allocator.preload()  # returns


def test_a_missing_wheel_means_no_library(monkeypatch):
  def missing(name):
    raise metadata.PackageNotFoundError(name)
  monkeypatch.setattr(allocator.metadata, 'distribution', missing)
  assert allocator.library_path() is None


@pytest.mark.parametrize('argv, expected', [
    (['python', '-m', 'experiments.dense_vs_conv', '--workdir=w'], True),
    (['python', '-u', '-X', 'faulthandler', '-m', 'experiments.cifar10'], True),
    (['python', '-mexperiments.cifar10'], True),
    (['python', '-m', 'pytest', 'tests/experiments'], False),
    (['python', '-c', 'import experiments'], False),
    (['python', 'experiments/dense_vs_conv.py'], False),
    (['python', '-m', 'experimentsx'], False),
    (['python'], False),
])
def test_started_as(monkeypatch, argv, expected):
  monkeypatch.setattr(allocator.sys, 'orig_argv', argv)
  assert allocator.started_as('experiments.') is expected


def _python(code, **environ):
  env = {k: v for k, v in os.environ.items()
         if k not in ('LD_PRELOAD', allocator.GUARD, allocator.OPT_OUT)}
  env.update(environ, PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=60, check=True)
  return done.stdout


CODE = ('import allocator; allocator.preload(); '
        'print(open("/proc/self/maps").read().count("libmimalloc") > 0, allocator.describe())')


def test_the_reexecuted_process_maps_mimalloc():
  library = allocator.library_path()
  if library is None or sys.platform != 'linux':
    pytest.skip('cmeel-mimalloc has no wheel for this platform (setup.cfg marker)')
  assert _python(CODE).split() == ['True', 'allocator:', 'mimalloc', f'({library})']
  assert _python(CODE, REDCONV_ALLOCATOR='system').strip() == (
      'False allocator: system (REDCONV_ALLOCATOR=system)')
