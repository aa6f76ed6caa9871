"""The learning curves figure of every task (task figures: report/<task>.py)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from matplotlib.figure import Figure  # drawn without pyplot: no backend to choose
import numpy as np


def learning_curves(path: str, runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
                    steps_per_epoch: Mapping[str, int],
                    panels: Sequence[str | Sequence[str]] = (
                        'train/loss', 'eval/loss', 'train/accuracy', 'eval/accuracy'),
                    titles: Optional[Sequence[str]] = None, log_scale: Sequence[int] = ()
                    ) -> None:
  """The learning curves of every task: `runs[run][metric] = [(step, value)]`
  (train.metric_writer.read_metrics of each run's workdir), one panel per entry of
  `panels` (a metric, or several drawn together), one line per run and metric, the x
  axis in epochs so runs of different step counts line up. Panels named in `log_scale`
  (by index) use a log y axis; a metric no run logged is left out of its panel."""
  panels = [(p,) if isinstance(p, str) else tuple(p) for p in panels]
  fig = Figure(figsize=(4.2 * len(panels), 3.4))
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for index, (ax, metrics) in enumerate(zip(axes, panels)):
    for run, series in runs.items():
      for metric in metrics:
        if not series.get(metric):
          continue
        steps, values = zip(*series[metric])
        label = ' '.join(([run] if len(runs) > 1 else [])
                         + ([metric.split('/', 1)[-1]] if len(metrics) > 1 else []))
        ax.plot(np.asarray(steps) / steps_per_epoch[run], values, label=label or None,
                marker='o' if metric.startswith('eval') else None, markersize=3)
    ax.set_title(titles[index] if titles else ', '.join(metrics))
    if index in log_scale:
      ax.set_yscale('log')
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
