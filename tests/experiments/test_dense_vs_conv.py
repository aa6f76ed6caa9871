"""End to end: the main experiment on the real Fashion-MNIST files, shrunk."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import shared_data_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(workdir, *overrides):
  return [sys.executable, '-m', 'experiments.dense_vs_conv',
          '--config=experiments/dense_vs_conv.py:runlocal',
          '--config.data.source=fashion_mnist_idx',
          f'--config.data.data_dir={shared_data_path("fashion_mnist")}',
          '--config.progress_bar=False', f'--workdir={workdir}', *overrides]


def _env():
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('XLA_FLAGS', None)  # the experiment runs as a user would: one device
  return env


def test_runlocal_writes_the_report_and_figures(tmp_path):
  out = subprocess.run(_command(tmp_path), cwd=REPO, env=_env(), capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  for name in ['report.md', 'learning_curves.png', 'confusion_mlp.png', 'confusion_cnn.png',
               'misclassified_mlp.png', 'misclassified_cnn.png', 'shift_robustness.png',
               'cnn_filters.png']:
    assert (tmp_path / name).stat().st_size > 1000, name
  report = (tmp_path / 'report.md').read_text()
  assert 'Evaluated on all 10,000 test images.' in report
  assert '| MLP |' in report and '| CNN |' in report and 'shift (px)' in report
  assert '| MLP |' in out.stdout  # tables printed at the end
  # The report's numbers are the evaluators' results stored with the last checkpoint.
  from train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  final = {m: Checkpointer(str(tmp_path / m / 'checkpoints')).newest_record()[1][
      'progress']['eval_history'][-1] for m in ('mlp', 'cnn')}
  shift_rows = [f'| {s} | {final["mlp"][f"shift/accuracy_{s}px"]:.4f} | '
                f'{final["cnn"][f"shift/accuracy_{s}px"]:.4f} |' for s in range(5)]
  assert all(row in report for row in shift_rows), shift_rows
  assert final['cnn']['shift/accuracy_0px'] == final['cnn']['accuracy']
  trouser = [final[m]['confusion/per_class_accuracy'][1] for m in ('mlp', 'cnn')]
  assert f'| Trouser | {trouser[0]:.3f} | {trouser[1]:.3f} |' in report

  # Rerun when finished: the report is written again from the checkpoints, without
  # training or evaluating.
  (tmp_path / 'report.md').unlink()
  again = subprocess.run(_command(tmp_path), cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'epoch 1:' not in again.stdout and 'epoch 1:' in out.stdout
  rewritten = (tmp_path / 'report.md').read_text()
  assert all(row in rewritten for row in shift_rows)
  assert rewritten.split('### Accuracy')[1] == report.split('### Accuracy')[1]


def _checkpoints(path):
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
  """SIGKILL after the CNN's first epoch checkpoint; the rerun resumes there and ends
  with the same evaluation numbers (bitwise-equal floats) as a run never killed."""
  overrides = ['--config.num_epochs=3', '--config.train_examples=1024']
  subprocess.run(_command(tmp_path / 'whole', *overrides), cwd=REPO, env=_env(),
                 check=True, capture_output=True, timeout=900)

  killed = tmp_path / 'killed'
  proc = subprocess.Popen(_command(killed, *overrides), cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not _checkpoints(killed / 'cnn' / 'checkpoints') and time.time() < deadline:
    assert proc.poll() is None, 'finished before it could be killed'
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / 'report.md').exists()
  assert _checkpoints(killed / 'cnn' / 'checkpoints')[-1] < 24

  rerun = subprocess.run(_command(killed, *overrides), cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=900)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'resuming from the checkpoint at step' in rerun.stderr
  from train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  for model in ('mlp', 'cnn'):
    whole, resumed = (Checkpointer(str(run / model / 'checkpoints')).newest_record()
                      for run in (tmp_path / 'whole', killed))
    assert resumed[0] == whole[0] == 24, model
    assert resumed[1]['progress']['eval_history'] == whole[1]['progress']['eval_history']
