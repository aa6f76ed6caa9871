"""What defines a run: saved with every checkpoint, compared when a run resumes.

The record holds the resolved config, a few facts about the training data and the
shape and dtype of every array of the state. On resume the loop compares the record
of the newest checkpoint with the current run: identical means resume; a difference
in a field that can change the result stops the run before any work with one
message naming each field (old -> new) and the ways on. `config.allow_config_change`
(the command line's `--allow_config_change`) resumes anyway and notes the change in
the record; different array shapes can never be restored, override or not.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from typing import Any, Mapping, Optional

import jax

from errors import UserError

# Fields that cannot change the trained state, so they may change between a run and
# its resumption (a field matches, and so does everything below it; `*` stands for any
# part of a name):
NON_RESULT_FIELDS = (
    'progress_bar',         # display only
    'log_every_steps',      # how often training metrics are fetched and written
    'eval_batch_size',      # evaluation batching: every example is still counted once
    'eval_every_epochs',    # when to evaluate, not what is trained (the last epoch always is)
    'evals.*.every_epochs',  # when one evaluator runs (what it measures does count)
    'num_shown',            # how many images the report draws
    'num_overlays',         # ditto (segmentation)
    'distributed',          # how processes join; the replicated state restores on any count
    'allow_config_change',  # the override itself
)
OVERRIDE_HINT = '--allow_config_change (config.allow_config_change=True)'


class ConfigChangedError(UserError):
  """The checkpoints in a workdir were made by another config or another model."""


def config_json(config: Mapping[str, Any]) -> dict[str, Any]:
  """The resolved config as JSON values (tuples become lists), as saved and compared."""
  if hasattr(config, 'to_dict'):
    config = config.to_dict()
  return json.loads(json.dumps(config, sort_keys=True, default=repr))


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict) and tree:
    flat = {}
    for key, value in tree.items():
      flat.update(_flatten(value, f'{prefix}{key}.'))
    return flat
  return {prefix[:-1]: tree}


def _defines_result(field: str) -> bool:
  return not any(fnmatch.fnmatchcase(field, f) or fnmatch.fnmatchcase(field, f + '.*')
                 for f in NON_RESULT_FIELDS)


def _result_fields(config: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in _flatten(config).items() if _defines_result(k)}


def fingerprint(record: Mapping[str, Any]) -> str:
  """A short hash of everything in `record` that defines the result."""
  defining = {'config': _result_fields(record['config']), 'data': record.get('data'),
              'shapes': record.get('shapes')}
  return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


def describe(config: Mapping[str, Any], *, train_examples: Optional[int] = None,
             image_shape: Optional[tuple[int, ...]] = None,
             class_names: Optional[tuple[str, ...]] = None, state: Any = None
             ) -> dict[str, Any]:
  """The record of a run: its config, data facts and state shapes, with their fingerprint."""
  record: dict[str, Any] = {'config': config_json(config)}
  if train_examples is not None:
    record['data'] = {'train_examples': int(train_examples),
                      'image_shape': [int(d) for d in image_shape],
                      'class_names': [str(c) for c in class_names]}
  if state is not None:
    import flax  # pylint: disable=g-import-not-at-top
    tree = flax.serialization.to_state_dict(state)
    record['shapes'] = {
        jax.tree_util.keystr(path): f'{leaf.dtype}{list(leaf.shape)}'
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  record['fingerprint'] = fingerprint(record)
  return record


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], show=repr) -> list[str]:
  def value(d, k):
    return show(d[k]) if k in d else '(absent)'
  return [f'{k}: {value(old, k)} -> {value(new, k)}' for k in sorted(set(old) | set(new))
          if k not in old or k not in new or old[k] != new[k]]


def _shorten(items: list[str], limit: int = 6) -> str:
  more = f'; and {len(items) - limit} more' if len(items) > limit else ''
  return '; '.join(items[:limit]) + more


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any], directory: str,
                 step: int, allow_change: bool = False) -> list[str]:
  """Raises `ConfigChangedError` unless the run of `current` may resume from `saved`.

  Returns the differences allowed by `allow_change` (empty when identical).
  """
  changed = _differences(_result_fields(saved['config']), _result_fields(current['config']))
  if 'data' in saved and 'data' in current:
    changed += [f'data {d}' for d in _differences(saved['data'], current['data'])]
  where = f'the checkpoints in {directory} (step {step})'
  if changed and not allow_change:
    raise ConfigChangedError(
        f'the config differs from the one that made {where}: {_shorten(changed)}.\n'
        'To resume, rerun with the saved values; to start afresh, use a new --workdir; to '
        f'continue these checkpoints under the new config, add {OVERRIDE_HINT}.')
  if 'shapes' in saved and 'shapes' in current and saved['shapes'] != current['shapes']:
    # Parameters first: they say more about the model than its optimizer moments.
    shapes = sorted(_differences(saved['shapes'], current['shapes'], show=str),
                    key=lambda d: not d.startswith("['params']"))
    raise ConfigChangedError(
        f"the model's arrays do not fit {where}: {_shorten(shapes, 3)}.\n"
        'They cannot be restored into this model, override or not; use a new --workdir '
        f'(or move {directory} away to start afresh).')
  return changed


def changes_note(config_changes: list[dict[str, Any]], who: str = '') -> str:
  """For a report: each `allow_config_change` resume of the run ('' if none), so numbers
  made partly under another config never pass for a clean run."""
  return ' '.join(f'{who}Resumed at step {c["step"]} under a changed config: '
                  f'{"; ".join(c["changed"])}.' for c in config_changes)


def check_workdir(config: Mapping[str, Any], workdir: str) -> None:
  """Before any work: stops if `workdir` holds checkpoints made by another config.

  Reads only the newest readable record (the loop checks data, shapes and the arrays
  when it restores); a workdir without checkpoints passes.
  """
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return
  from train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(directory)
  try:
    newest = ckpt.newest_record()
  finally:
    ckpt.close()
  if newest is not None:
    step, saved = newest
    check_resume(saved, describe(config), ckpt.directory, step,
                 bool(config.get('allow_config_change', False)))
