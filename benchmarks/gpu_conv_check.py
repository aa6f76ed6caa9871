"""On an accelerator: do the CPU-motivated layers change anything there?

models/cpu_conv.py (CNN, ResNet-20, U-Net convolutions) lowers lax's convolution on
GPU/TPU (`lax.platform_dependent`), and models/patch_transpose.py (the U-Net's 2x2
upsampling) is a matrix product everywhere. Per model, this compares the logits, the
loss gradients and the step time of the model as it is against the same model built
with plain `lax.conv_general_dilated` and `nn.ConvTranspose`, same parameters, same
batch, on the default device, and checks the compiled step has none of the CPU
kernels' custom calls. Needs only numpy, jax, flax and the repo's models/.

Differences are relative L2 norms over all of an array (logits) or all gradient leaves
together. Their scale: a train-mode step is not smooth (max-pool argmaxes and ReLUs
flip under rounding-sized changes: on CPU, the plain U-Net's gradient moved 12% in
one leaf when its input moved by 1e-6), so each row also gives the noise floor, the
plain model against itself with the input scaled by (1 + 1e-6 * noise).

  python benchmarks/gpu_conv_check.py [--steps 30]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

MODELS = {  # name: (model config, batch shape), as the benchmarks and experiments use them
    'cnn': ({'name': 'cnn', 'widths': (32, 64), 'dense_width': 256}, (128, 28, 28, 1)),
    'resnet20': ({'name': 'resnet20'}, (128, 32, 32, 3)),
    'unet': ({'name': 'unet', 'num_classes': 4, 'depth': 4, 'base_width': 32,
              'norm': 'batch', 'upsample': 'transpose'}, (8, 192, 192, 3)),
}


@contextlib.contextmanager
def plain_layers():
  """The models as they were: lax's convolution and flax's ConvTranspose."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  from models import cnn, resnet, unet  # pylint: disable=g-import-not-at-top

  def conv_transpose(features, kernel_size, dtype=None, name=None):
    return nn.ConvTranspose(features, kernel_size, strides=kernel_size, dtype=dtype,
                            name=name)
  saved = [(m, 'conv_general_dilated', m.conv_general_dilated) for m in (cnn, resnet, unet)]
  saved.append((unet, 'PatchConvTranspose', unet.PatchConvTranspose))
  for module, attr, _ in saved[:3]:
    setattr(module, attr, lax.conv_general_dilated)
  unet.PatchConvTranspose = conv_transpose
  try:
    yield
  finally:
    for module, attr, value in saved:
      setattr(module, attr, value)


def loss_and_grad(model):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def loss_fn(params, batch_stats, x):
    logits, _ = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                            mutable=['batch_stats'], rngs={'dropout': jax.random.PRNGKey(0)})
    return jnp.mean(jax.nn.log_softmax(logits) ** 2), logits

  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  return grad_fn


def _relative(a, b) -> float:
  """||a - b|| / ||b|| over all leaves together."""
  import jax  # pylint: disable=g-import-not-at-top
  a = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(a)])
  b = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(b)])
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check(name: str, steps: int) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  from models import build_model  # pylint: disable=g-import-not-at-top
  config, shape = MODELS[name]
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  nudged = x * (1 + 1e-6 * jax.random.normal(jax.random.PRNGKey(2), shape))
  results = {}
  for variant in ('ours', 'plain'):
    with plain_layers() if variant == 'plain' else contextlib.nullcontext():
      model = build_model(config)
      variables = model.init(jax.random.PRNGKey(0), x[:1])
      grad_fn = loss_and_grad(model)
      args = (variables['params'], variables['batch_stats'], x)
      text = grad_fn.lower(*args).compile().as_text()
      (_, logits), grads = jax.block_until_ready(grad_fn(*args))
      times = []
      for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
          out = grad_fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / steps)
      results[variant] = (logits, grads, statistics.median(times), 'redconv' in text)
      if variant == 'plain':
        (_, floor_logits), floor_grads = grad_fn(*args[:2], nudged)
  (logits, grads, ours_s, ours_custom), (ref_logits, ref_grads, plain_s, _) = (
      results['ours'], results['plain'])
  return (f'| {name} {shape} | {_relative(logits, ref_logits):.1e} '
          f'({_relative(floor_logits, ref_logits):.1e}) | {_relative(grads, ref_grads):.1e} '
          f'({_relative(floor_grads, ref_grads):.1e}) | {"yes" if ours_custom else "no"} | '
          f'{ours_s * 1e3:.2f} | {plain_s * 1e3:.2f} |')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--models', default=','.join(MODELS))
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  print(f'Device: {device.device_kind} ({device.platform}); jax {jax.__version__}; '
        f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}\n')
  print('| model, batch | logits rel. diff (noise floor) | gradients rel. diff (noise '
        'floor) | CPU kernels compiled in | ours ms/grad step | plain ms/grad step |')
  print('|---|---|---|---|---|---|')
  for name in args.models.split(','):
    print(check(name, args.steps), flush=True)


if __name__ == '__main__':
  main()
