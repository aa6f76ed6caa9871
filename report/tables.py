"""Markdown tables for reports and benchmark results."""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  """Lines of a markdown table; cells are written with str()."""
  return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
          + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])


def history_table(history: Sequence[Mapping[str, Any]], columns: Mapping[str, str],
                  digits: int = 4) -> list[str]:
  """One row per evaluation: 'epoch', then `columns` (title -> history key)."""
  return markdown_table(['epoch', *columns], [
      [entry['epoch'], *(f'{entry[key]:.{digits}f}' for key in columns.values())]
      for entry in history])
