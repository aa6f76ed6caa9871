"""Importing torchvision ResNet-50 weights: the same stage outputs as torchvision itself.

The reference is a randomly initialised `torchvision.models.resnet50` (BatchNorm in eval
mode, its affine and running statistics randomised too, so a wrong BatchNorm mapping
cannot pass), saved as a `.pth` state_dict and a `.safetensors` file; both are imported
and C2-C5 (and the classifier's logits) compared on the same images. Needs the
`weights` extra (torch, torchvision, safetensors); the error tests need none of it.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import import_torchvision
from models.import_torchvision import assign_state_dict, load_resnet50, torch_key
from models.resnet50 import ResNet50

_TORCHVISION_OPS = None  # keeps the op schemas below alive for the session


def _import_torchvision():
  """torchvision, importable beside the CPU torch.

  PyPI's torchvision wheels are CUDA builds: beside a CPU torch their C++ ops do not
  load, and torchvision 0.28 then fails at import registering fake kernels for
  `torchvision::nms` and `qnms` (that registration, unlike the others, is not guarded by
  `_has_ops()`). The models are pure Python and use none of the ops, so declaring the
  two op schemas (never run) lets the import complete.
  """
  global _TORCHVISION_OPS
  torch = pytest.importorskip('torch')
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision
  except ImportError:
    pytest.skip('torchvision is not installed: pip install -e .[weights]')
  except RuntimeError as e:
    if 'torchvision::' not in str(e):
      raise
  for name in [m for m in sys.modules if m.split('.')[0] == 'torchvision']:
    del sys.modules[name]
  _TORCHVISION_OPS = torch.library.Library('torchvision', 'DEF')
  _TORCHVISION_OPS.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  _TORCHVISION_OPS.define('qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor')
  import torchvision  # pylint: disable=g-import-not-at-top
  return torchvision


@pytest.fixture(scope='module')
def torch_resnet(tmp_path_factory):
  """(model in eval mode, .pth path, .safetensors path) of a random torchvision ResNet-50."""
  torch = pytest.importorskip('torch')
  safetensors_torch = pytest.importorskip('safetensors.torch')
  torchvision = _import_torchvision()
  torch.manual_seed(0)
  model = torchvision.models.resnet50()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.0)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(1.0, 2.0)
  model.eval()
  directory = tmp_path_factory.mktemp('weights')
  pth, safetensors = str(directory / 'resnet50.pth'), str(directory / 'resnet50.safetensors')
  torch.save(model.state_dict(), pth)
  safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                              safetensors)
  return model, pth, safetensors


def _torch_stages(model, images: np.ndarray) -> list[np.ndarray]:
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    stages = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
      x = layer(x)
      stages.append(x.numpy().transpose(0, 2, 3, 1))
    return stages + [model.fc(torch.flatten(model.avgpool(x), 1)).numpy()]


@pytest.mark.slow  # ~50 s on 2 cores: op-by-op ResNet-50s in both frameworks
@pytest.mark.parametrize('suffix', ['pth', 'safetensors'])
def test_imported_stages_match_torchvision(torch_resnet, suffix):
  model, pth, safetensors = torch_resnet
  path = pth if suffix == 'pth' else safetensors
  images = np.random.default_rng(0).normal(size=(2, 96, 64, 3)).astype(np.float32)
  expected = _torch_stages(model, images)
  trunk = ResNet50(freeze_at=2)
  init = lambda model: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  variables = load_resnet50(init(trunk), path)
  stages = trunk.apply(variables, jnp.asarray(images))
  for name, ours, theirs in zip(('C2', 'C3', 'C4', 'C5'), stages, expected):
    assert ours.shape == theirs.shape, name
    diff = float(np.max(np.abs(np.asarray(ours) - theirs)))
    assert diff <= 1e-4, f'{name}: max abs diff {diff} (max |value| {np.abs(theirs).max()})'
  classifier = ResNet50(num_classes=1000)
  variables = load_resnet50(init(classifier), path)
  logits = classifier.apply(variables, jnp.asarray(images))
  np.testing.assert_allclose(np.asarray(logits), expected[-1], atol=1e-4, rtol=0)


def _state_of(variables) -> dict[str, np.ndarray]:
  """A torch-layout state_dict holding a flax ResNet's own variables (no torch needed)."""
  state = {}
  for tree in variables.values():
    for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = tuple(p.key for p in path)
      value = np.asarray(value)
      if value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)
      elif keys == ('fc', 'kernel'):
        value = value.T
      state[torch_key(keys)] = value
  return state


@pytest.fixture(scope='module', params=['frozen', 'batch'])
def small_resnet(request):
  model = ResNet50(stage_blocks=(1, 1, 1, 1), norm=request.param, freeze_at=1)
  return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_a_state_dict_of_the_models_own_variables_round_trips(small_resnet):
  model, variables = small_resnet
  state = _state_of(variables)
  state['layer1.0.bn1.num_batches_tracked'] = np.asarray(7)
  state['fc.weight'] = np.zeros((1000, 2048), np.float32)  # no fc in a trunk: skipped
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables)
  loaded = assign_state_dict(zeroed, state, source='made.pth')
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)


def test_extra_key_is_named_with_the_file(small_resnet):
  _, variables = small_resnet
  state = _state_of(variables)
  state['layer1.1.conv1.weight'] = np.zeros((64, 256, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"made\.pth: key 'layer1\.1\.conv1\.weight'.*no variable"):
    assign_state_dict(variables, state, source='made.pth')


def test_missing_key_is_named_with_the_file(small_resnet):
  _, variables = small_resnet
  state = _state_of(variables)
  del state['layer3.0.bn2.running_var']
  with pytest.raises(ValueError, match=r"made\.pth: 1 variable.*'layer3\.0\.bn2\.running_var'"):
    assign_state_dict(variables, state, source='made.pth')


def test_shape_mismatch_is_named_with_the_file(small_resnet):
  _, variables = small_resnet
  state = _state_of(variables)
  state['layer2.0.conv2.weight'] = np.zeros((128, 128, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"made\.pth: key 'layer2\.0\.conv2\.weight' has shape "
                                       r'\(128, 128, 1, 1\).*\(3, 3, 128, 128\)'):
    assign_state_dict(variables, state, source='made.pth')


def test_loads_under_a_module_path_and_keeps_the_rest(small_resnet):
  _, variables = small_resnet
  nested = {c: {'backbone': {'trunk': t, 'fpn': {'w': jnp.ones(3)}}} for c, t in
            variables.items()}
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, nested)
  loaded = assign_state_dict(zeroed, _state_of(variables), at=('backbone', 'trunk'))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded['params']['backbone']['trunk'],
                         variables['params'])
  np.testing.assert_array_equal(loaded['params']['backbone']['fpn']['w'], np.zeros(3))


def test_unknown_suffix_and_missing_file_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='no weights file'):
    import_torchvision.read_state_dict(str(tmp_path / 'absent.pth'))
  (tmp_path / 'w.bin').write_bytes(b'')
  with pytest.raises(ValueError, match=r'w\.bin: expected a \.pth'):
    import_torchvision.read_state_dict(str(tmp_path / 'w.bin'))
