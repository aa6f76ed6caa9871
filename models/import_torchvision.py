"""ImageNet ResNet-50 weights from the files users have: a torchvision state_dict (`.pth`,
`.pt`) or a safetensors file, mapped onto models/resnet50.py's variables.

    variables = load_resnet50(variables, 'resnet50-11ad3fa6.pth', at=('backbone', 'trunk'))

Nothing is downloaded: the file is read from disk. A `.safetensors` file needs only the
`safetensors` package (NumPy arrays, no torch); a `.pth` needs torch (`torch.load` with
`weights_only=True`, on the CPU). Both come with `pip install -e '.[weights]'`.

Mapping (torch key -> flax path under `at`, in whichever collection holds it):
  conv1.weight                  conv1/kernel               OIHW -> HWIO
  bn1.{weight,bias}             bn1/{scale,bias}
  bn1.running_{mean,var}        bn1/{mean,var}             ('frozen' or 'batch_stats')
  layer2.0.conv2.weight         layer2_block0/conv2/kernel
  layer2.0.downsample.{0,1}.*   layer2_block0/downsample_{conv,bn}/*
  fc.{weight,bias}              fc/{kernel,bias}           [out, in] -> [in, out]
`num_batches_tracked` is not a weight and is skipped; `fc.*` is skipped when the model
has no `fc` (a trunk without the ImageNet classifier). Every other key of the file must
land on a variable of the same shape, and every variable under `at` must be filled:
otherwise a ValueError names the file, the torch key and the flax path.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import numpy as np

_BN_LEAVES = {'weight': 'scale', 'bias': 'bias', 'running_mean': 'mean', 'running_var': 'var'}
_WRAPPERS = ('state_dict', 'model')  # checkpoints that nest the state_dict under a key


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a `.pth`/`.pt` state_dict or a `.safetensors` file, as NumPy arrays."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'models/import_torchvision.py: no weights file at {path!r}.')
  if path.endswith('.safetensors'):
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f'{path}: reading .safetensors needs the safetensors package: '
                        "pip install -e '.[weights]'.") from e
    return dict(load_file(path))
  if not path.endswith(('.pth', '.pt')):
    raise ValueError(f'{path}: expected a .pth/.pt torch state_dict or a .safetensors file.')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'{path}: reading a .pth needs torch (or convert it to .safetensors): '
                      "pip install -e '.[weights]'.") from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  for key in _WRAPPERS:
    if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
      state = state[key]
  if not isinstance(state, Mapping):
    raise ValueError(f'{path}: expected a state_dict (a mapping of names to tensors), got '
                     f'{type(state).__name__}.')
  return {k: v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}


def flax_path(key: str) -> tuple[str, ...] | None:
  """The flax path of a torchvision ResNet state_dict key; None for keys that are no weight."""
  parts = key.split('.')
  if parts[-1] == 'num_batches_tracked':
    return None
  leaf = parts[-1]
  if parts[0] == 'fc' and len(parts) == 2:
    return ('fc', {'weight': 'kernel', 'bias': 'bias'}.get(leaf, leaf))
  match = re.fullmatch(r'layer(\d+)\.(\d+)\.(.+)', '.'.join(parts[:-1]))
  if match:
    stage, block, layer = match.groups()
    layer = {'downsample.0': 'downsample_conv', 'downsample.1': 'downsample_bn'}.get(layer, layer)
    module = (f'layer{stage}_block{block}', layer)
  else:
    module = tuple(parts[:-1])
  is_conv = module[-1].startswith('conv') or module[-1] == 'downsample_conv'
  if is_conv:
    return (*module, 'kernel' if leaf == 'weight' else leaf)
  return (*module, _BN_LEAVES.get(leaf, leaf))


def torch_key(path: Sequence[str]) -> str:
  """The torchvision key of a flax path (the inverse of `flax_path`), for messages."""
  *module, leaf = path
  match = re.fullmatch(r'layer(\d+)_block(\d+)', module[0]) if module else None
  if match:
    module = [f'layer{match[1]}', match[2], *module[1:]]
  module = [{'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}.get(m, m)
            for m in module]
  names = {'kernel': 'weight', 'scale': 'weight', 'mean': 'running_mean', 'var': 'running_var'}
  return '.'.join([*module, names.get(leaf, leaf)])


def _to_flax(key: str, array: np.ndarray) -> np.ndarray:
  array = np.asarray(array)
  if not np.issubdtype(array.dtype, np.floating):
    return array
  array = array.astype(np.float32)
  if array.ndim == 4:   # conv weight [O, I, H, W] -> [H, W, I, O]
    return array.transpose(2, 3, 1, 0)
  if key == 'fc.weight':  # dense [out, in] -> [in, out]
    return array.T
  return array


def _subtree(tree: Mapping[str, Any], at: Sequence[str]) -> Mapping[str, Any] | None:
  for name in at:
    if not isinstance(tree, Mapping) or name not in tree:
      return None
    tree = tree[name]
  return tree


def load_resnet50(variables: Mapping[str, Any], path: str, *, at: Sequence[str] = ()
                  ) -> dict[str, Any]:
  """`variables` ({collection: tree}, e.g. from `model.init`) with the ResNet under the
  module path `at` replaced by the weights in `path`; other variables are kept."""
  return assign_state_dict(variables, read_state_dict(path), at=at, source=path)


def assign_state_dict(variables: Mapping[str, Any], state: Mapping[str, np.ndarray], *,
                      at: Sequence[str] = (), source: str = '<state_dict>') -> dict[str, Any]:
  """`load_resnet50` on a state_dict already read (`source` names it in errors)."""
  variables = flax.core.unfreeze(variables)
  targets = {}  # flax path under `at` -> (collection, flat dict of that collection)
  flats = {}
  for collection, tree in variables.items():
    subtree = _subtree(tree, at)
    if subtree is None:
      continue
    flats[collection] = flax.traverse_util.flatten_dict(flax.core.unfreeze(subtree))
    targets.update({path: collection for path in flats[collection]})
  if not targets:
    raise ValueError(f'{source}: the model has no variables under {"/".join(at) or "<root>"}; '
                     f'collections {sorted(variables)}.')
  has_fc = any(path[0] == 'fc' for path in targets)
  filled = set()
  for key, array in state.items():
    path = flax_path(key)
    if path is None or (path[0] == 'fc' and not has_fc):
      continue
    if path not in targets:
      raise ValueError(f'{source}: key {key!r} (-> {"/".join(path)}) matches no variable of '
                       f'the model under {"/".join(at) or "<root>"}: an extra key, or not a '
                       'torchvision ResNet-50 state_dict.')
    collection = targets[path]
    value = _to_flax(key, array)
    expected = flats[collection][path].shape
    if value.shape != expected:
      raise ValueError(f'{source}: key {key!r} has shape {tuple(np.shape(array))}, which maps '
                       f'to {value.shape}; the model\'s {collection}/{"/".join(path)} is '
                       f'{tuple(expected)}.')
    flats[collection][path] = value
    filled.add(path)
  missing = sorted(set(targets) - filled)
  if missing:
    names = ', '.join(f'{torch_key(p)!r} (for {"/".join(p)})' for p in missing[:5])
    raise ValueError(f'{source}: {len(missing)} variable(s) of the model under '
                     f'{"/".join(at) or "<root>"} have no key in the file: missing {names}.')
  for collection, flat in flats.items():
    tree = variables[collection]
    for name in at[:-1]:
      tree = tree[name]
    unflat = flax.traverse_util.unflatten_dict(flat)
    if at:
      tree[at[-1]] = unflat
    else:
      variables[collection] = unflat
  return variables
