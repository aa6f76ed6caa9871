"""setup.cfg installs every package the code imports (an editable install finds a
missing one by path, a wheel or a plain install would not)."""
import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_INSTALLED = {'tests', 'benchmarks'}  # run from a checkout only


def test_every_top_level_package_is_in_setup_cfg():
  parser = configparser.ConfigParser()
  parser.read(os.path.join(ROOT, 'setup.cfg'))
  included = set(parser['options.packages.find']['include'].split())
  packages = {d for d in os.listdir(ROOT)
              if os.path.isfile(os.path.join(ROOT, d, '__init__.py'))} - NOT_INSTALLED
  assert packages and {p for p in packages if p not in included or f'{p}.*' not in included} == set()
