"""The layers of the code base, checked on the import statements themselves (including
imports inside functions): data and models know nothing of each other or of training;
train/ knows no task, report or experiment; and no module imports itself back."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('data', 'models', 'train', 'tasks', 'report', 'experiments', 'benchmarks')
# package -> first-party packages it must never import
FORBIDDEN = {
    'data': {'models', 'train', 'tasks', 'report', 'experiments'},
    'models': {'data', 'train', 'tasks', 'report', 'experiments'},
    'train': {'tasks', 'report', 'experiments'},
    'tasks': {'report', 'experiments'},
    'report': {'experiments'},  # and nothing below imports report (train, tasks)
}


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
  return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _modules() -> dict[str, str]:
  found = {}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(directory, name)
          found[_module_name(path)] = path
  return found


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """First-party modules `path` imports, resolved to the most specific module."""
  names = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        names.add(full if full in modules else node.module)
  return {n for n in names if n.split('.')[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) for name, path in modules.items()}


def test_the_graph_is_read_from_the_code():
  graph = _graph()
  assert 'train.loop' in graph and 'train.task' in graph['train.loop']
  assert 'tasks.classification.task' in graph['experiments.dense_vs_conv']


@pytest.mark.parametrize('package', sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(package):
  bad = sorted(f'{module} imports {imported}' for module, imports in _graph().items()
               if module.split('.')[0] == package
               for imported in imports if imported.split('.')[0] in FORBIDDEN[package])
  assert bad == []


def test_no_import_cycle_in_train_tasks_and_models():
  graph = {m: {i for i in imports if i.split('.')[0] in ('train', 'tasks', 'models')}
           for m, imports in _graph().items() if m.split('.')[0] in ('train', 'tasks', 'models')}
  state, cycles = {}, []

  def visit(module, path):
    state[module] = 'open'
    for imported in sorted(graph.get(module, ())):
      # a package's __init__ importing its own submodules is not a cycle
      if imported.startswith(module + '.') :
        continue
      if state.get(imported) == 'open':
        cycles.append(path[path.index(imported):] + [imported] if imported in path
                      else path + [imported])
      elif imported not in state:
        visit(imported, path + [imported])
    state[module] = 'done'

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert cycles == []
