"""The notebooks in notebooks/: committed without outputs, and executed top to bottom.

Execution starts a Jupyter kernel in notebooks/ (where Jupyter starts one) with the
interpreter running the tests, and fails on the first cell that raises. To clear a
notebook's outputs before committing: Jupyter's "Clear All Outputs", or
`jupyter nbconvert --clear-output --inplace notebooks/<name>.ipynb`.
"""
import os
import pathlib
import time

import nbformat
import pytest

from tests.conftest import shared_data_path

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / 'notebooks'
# What each notebook reads from ../shared/data (it is skipped when that is missing).
DATA = {
    'dense_vs_conv.ipynb': ('fashion_mnist',),
    'augmentation_and_segmentation.ipynb': ('camvid_240x180', 'coco128', 'nuclei_dsb2018'),
}
CELL_TIMEOUT_S = 600


def test_every_notebook_is_listed_here():
  assert sorted(p.name for p in NOTEBOOKS.glob('*.ipynb')) == sorted(DATA)


@pytest.mark.parametrize('name', sorted(DATA))
def test_committed_notebook_carries_no_outputs(name):
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  nbformat.validate(notebook)
  dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == 'code'
           and (cell.outputs or cell.execution_count is not None)]
  assert not dirty, (f'notebooks/{name}: code cells {dirty} carry outputs or execution '
                     'counts; clear them before committing (see this module\'s docstring).')


def execute(path: pathlib.Path, temp_dir: str | None = None,
            timeout: int = CELL_TIMEOUT_S) -> float:
  """Runs the notebook at `path` top to bottom in a fresh kernel started in its folder
  (its temporary workdirs under `temp_dir`, if given); returns the seconds it took.
  Raises nbclient's CellExecutionError naming the cell and its traceback when a cell
  raises."""
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  notebook = nbformat.read(path, as_version=4)
  # The kernel gets the user's environment, not the test suite's 4 fake CPU devices.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if temp_dir:
    env['TMPDIR'] = temp_dir
  client = NotebookClient(notebook, timeout=timeout, kernel_name='python3',
                          resources={'metadata': {'path': str(path.parent)}})
  start = time.perf_counter()
  client.execute(env=env)
  return time.perf_counter() - start


@pytest.mark.slow  # each trains small models: minutes on 2 cores
@pytest.mark.parametrize('name', sorted(DATA))
def test_notebook_runs_top_to_bottom(name, tmp_path):
  for folder in DATA[name]:
    shared_data_path(folder)
  seconds = execute(NOTEBOOKS / name, str(tmp_path))
  print(f'notebooks/{name}: {seconds:.0f} s')


if __name__ == '__main__':  # python -m tests.test_notebooks: time each notebook
  for notebook_name in sorted(DATA):
    print(f'notebooks/{notebook_name}: {execute(NOTEBOOKS / notebook_name):.0f} s', flush=True)
