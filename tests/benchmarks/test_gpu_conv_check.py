"""benchmarks/gpu_conv_check.py: the models as they are vs. on plain lax layers."""
import os
import re
import sys

import flax.linen as nn
from jax import lax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import gpu_conv_check  # noqa: E402  pylint: disable=g-import-not-at-top
from models import cnn, cpu_conv, resnet, unet  # noqa: E402
from models.patch_transpose import PatchConvTranspose  # noqa: E402


def test_plain_layers_swaps_the_layers_and_puts_them_back():
  with gpu_conv_check.plain_layers():
    assert cnn.conv_general_dilated is lax.conv_general_dilated
    assert resnet.conv_general_dilated is lax.conv_general_dilated
    assert unet.conv_general_dilated is lax.conv_general_dilated
    assert isinstance(unet.PatchConvTranspose(4, (2, 2), name='t'), nn.ConvTranspose)
  for module in (cnn, resnet, unet):
    assert module.conv_general_dilated is cpu_conv.conv_general_dilated
  assert unet.PatchConvTranspose is PatchConvTranspose


def test_cnn_row_on_cpu_agrees_with_lax_and_runs_the_kernels(monkeypatch):
  monkeypatch.setitem(gpu_conv_check.MODELS, 'cnn',
                      ({'name': 'cnn', 'widths': (8, 16), 'dense_width': 32}, (16, 28, 28, 1)))
  row = gpu_conv_check.check('cnn', steps=1)
  cells = [c.strip() for c in row.strip('|').split('|')]
  logits_diff, grads_diff = (float(re.match(r'(\S+) \(', c).group(1)) for c in cells[1:3])
  assert logits_diff < 1e-5 and grads_diff < 1e-4
  # On CPU the model as it is compiles the kernels' custom calls (where a compiler is).
  from models import conv_kernels
  assert cells[3] == ('yes' if conv_kernels.available() else 'no')
