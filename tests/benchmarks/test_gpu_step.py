"""benchmarks/gpu_step.py --run works where TensorFlow and ml_collections are missing."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The device machine has no TensorFlow, TFDS or ml_collections: None in sys.modules makes
# any import of them raise ImportError, as there.
_WITHOUT_TF = """
import runpy, sys
for name in ('tensorflow', 'tensorflow_datasets', 'ml_collections'):
  sys.modules[name] = None
sys.argv = ['gpu_step.py'] + sys.argv[1:]
runpy.run_path({script!r}, run_name='__main__')
"""


def test_prepare_here_then_run_one_step_without_tensorflow(tmp_path):
  # --prepare (here, with TensorFlow) writes the batch the device run reads; the batches
  # are made from ../shared/data and never committed (the device run carries them).
  batches = tmp_path / 'batches'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': ''}
  script = os.path.join(REPO, 'benchmarks', 'gpu_step.py')
  proc = subprocess.run(
      [sys.executable, script, '--prepare', '--models', 'mlp', '--directory', str(batches)],
      cwd=REPO, env={**env, 'PYTHONPATH': REPO}, capture_output=True, text=True,
      timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(batches / 'mlp.json') as f:
    spec = json.load(f)
  assert spec['key'] == 'mlp' and spec['batch_size'] == spec['arrays']['image'][1][0]
  assert spec['arrays']['image'][0] == 'uint8'
  assert os.path.getsize(batches / 'mlp.npz') < 2**20

  output = tmp_path / 'table.md'
  code = _WITHOUT_TF.format(script=script)
  proc = subprocess.run(
      [sys.executable, '-c', code, '--run', '--models', 'mlp', '--dtypes', 'float32,bfloat16',
       '--steps', '1', '--repeats', '1', '--directory', str(batches), '--output', str(output)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  table = output.read_text()
  row = [line for line in table.splitlines() if line.startswith('| MLP')]
  assert len(row) == 1, table
  cells = [c.strip() for c in row[0].strip('|').split('|')]
  # Both dtypes ran and gave a positive rate; the loss is finite.
  assert all(float(c.replace(',', '')) > 0 for c in cells[1:3]), row
  assert 'nan' not in row[0].lower() and 'failed' not in row[0], row
