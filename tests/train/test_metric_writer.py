"""The metrics log survives a line cut short (power loss, full disk) before a resume."""
from train.metric_writer import MetricWriter, read_metrics


def test_a_torn_line_is_skipped_with_a_warning_and_the_rest_is_read(tmp_path, capfd):
  writer = MetricWriter(str(tmp_path))
  writer.write_scalars(1, {'train/loss': 2.0})
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 2, "train/lo')  # the write the killed run never finished
  MetricWriter(str(tmp_path)).write_scalars(2, {'train/loss': 1.5})  # the resumed run
  writer.write_scalars(3, {'train/loss': 1.0})
  assert read_metrics(str(tmp_path)) == {'train/loss': [(1, 2.0), (2, 1.5), (3, 1.0)]}
  assert 'metrics.jsonl line 2 is not complete JSON' in capfd.readouterr().err
