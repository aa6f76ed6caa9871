"""The compiled CPU kernels one at a time: convolutions per layer, BatchNorm's passes.

Convolutions: for the CNN's, ResNet-20's and the U-Net's layer shapes (their benchmark
batches), the forward pass, the weight gradient and the stride-1 input gradient of
`models.conv_kernels`, each jitted alone: best of `--repeats` calls, ms and GFLOP/s;
each with the direct kernel and, for 3x3 at stride 1, with Winograd's (GFLOP/s of the
direct sums' count, a speed to compare).
BatchNorm (models/conv_kernels/norm.py): each pass over a first-stage activation against
XLA's fusion of the same arithmetic, median of `--repeats`, with the bandwidth of the
tensors each pass must read and write.

To compare two versions of the kernels, run it in both checkouts, one after the other,
and read the tables side by side (the kernels are cached per source, so each checkout
uses its own); `--save out.npz` keeps every convolution output to check two versions
for bit-identical results (`--compare other.npz`).

  PYTHONPATH=. python benchmarks/cpu_kernels.py [--repeats 9] [--save a.npz] [--compare b.npz]
prints the tables and writes benchmarks/results/cpu_kernels.md.
"""
from __future__ import annotations

import argparse
import os
import time

if __name__ == '__main__':  # before JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from models import conv_kernels  # noqa: E402

try:  # absent before 2026-11-27 evening: an older checkout gets the convolution table only
  from models.conv_kernels import norm  # noqa: E402
except ImportError:
  norm = None

# name, input [N, H, W, C], kernel [kh, kw, C, O], stride ('SAME' padding as the models).
CONV_LAYERS = [
    ('ResNet-20 stage 1, 16->16', (128, 32, 32, 16), (3, 3, 16, 16), 1),
    ('ResNet-20 stage 2, 32->32', (128, 16, 16, 32), (3, 3, 32, 32), 1),
    ('ResNet-20 stage 3, 64->64', (128, 8, 8, 64), (3, 3, 64, 64), 1),
    ('ResNet-20 16->32, stride 2', (128, 32, 32, 16), (3, 3, 16, 32), 2),
    ('ResNet-20 32->64, stride 2', (128, 16, 16, 32), (3, 3, 32, 64), 2),
    ('U-Net level 0, 16->16', (8, 128, 128, 16), (3, 3, 16, 16), 1),
    ('U-Net decoder, 32->16', (8, 128, 128, 32), (3, 3, 32, 16), 1),
    ('U-Net 64->32', (8, 64, 64, 64), (3, 3, 64, 32), 1),
    ('U-Net 128->64', (8, 32, 32, 128), (3, 3, 128, 64), 1),
    ('CNN 32->64', (128, 14, 14, 32), (3, 3, 32, 64), 1),
]
NORM_ACTIVATIONS = [(128, 32, 32, 16), (8, 128, 128, 16), (128, 8, 8, 64)]


def _best_ms(fn, args, repeats: int) -> tuple[float, float]:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times) * 1e3, float(np.median(times)) * 1e3


def conv_rows(repeats: int, outputs: dict) -> list[list]:
  rng = np.random.default_rng(0)
  rows = []
  for name, x_shape, kernel_shape, stride in CONV_LAYERS:
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    w = jnp.asarray(0.1 * rng.standard_normal(kernel_shape, np.float32))
    padding = ((1, 1), (1, 1)) if stride == 1 else ((0, 1), (0, 1))
    strides = (stride, stride)
    y_shape = jax.eval_shape(lambda x, w: conv_kernels.lax_forward(x, w, padding, strides),
                             x, w).shape
    dy = jnp.asarray(rng.standard_normal(y_shape, np.float32))
    passes = {'forward': (lambda x, w: conv_kernels.forward(
                  x, w, padding, strides, winograd=False), (x, w)),
              'weight gradient': (lambda x, dy: conv_kernels.weight_grad(
                  x, dy, kernel_shape, padding, strides, winograd=False), (x, dy))}
    if stride == 1:
      passes['input gradient'] = (lambda dy, w: conv_kernels.input_grad(
          dy, w, padding, x_shape, strides, winograd=False), (dy, w))
    if conv_kernels.winograd_possible(kernel_shape, strides):
      # Winograd's F(2x2, 3x3) (winograd.cc, winograd_weight_grad.cc): GFLOP/s counts the
      # direct sums' work, so they compare with the rows above as speeds.
      passes['forward, Winograd'] = (lambda x, w: conv_kernels.forward(
          x, w, padding, strides, winograd=True), (x, w))
      passes['input gradient, Winograd'] = (lambda dy, w: conv_kernels.input_grad(
          dy, w, padding, x_shape, strides, winograd=True), (dy, w))
      passes['weight gradient, Winograd'] = (lambda x, dy: conv_kernels.weight_grad(
          x, dy, kernel_shape, padding, strides, winograd=True), (x, dy))
    flops = 2 * np.prod(y_shape) * np.prod(kernel_shape[:3])
    for pass_name, (fn, args) in passes.items():
      fn = jax.jit(fn)
      outputs[f'{name} / {pass_name}'] = np.asarray(fn(*args))
      best, _ = _best_ms(fn, args, repeats)
      rows.append([name, f'{x_shape} x {kernel_shape}', pass_name, f'{best:.2f}',
                   f'{flops / best / 1e6:.0f}'])
      print(' | '.join(str(c) for c in rows[-1]), flush=True)
  return rows


def norm_rows(repeats: int) -> list[list]:
  rng = np.random.default_rng(0)
  rows = []
  for shape in NORM_ACTIVATIONS:
    x, dy, residual = (jnp.asarray(rng.standard_normal(shape, np.float32)) for _ in range(3))
    channels, axes = shape[-1], tuple(range(len(shape) - 1))
    mean, one = jnp.zeros(channels), jnp.ones(channels)
    out = jnp.maximum(x, 0.0)
    mb = x.nbytes / 1e6
    masked = lambda dy, out: jnp.where(out > 0, dy, 0.0)
    # name, tensors read + written, ours, XLA's, arguments
    cases = [
        ('statistics', 1, norm.stats,
         lambda x: (x.mean(axes), (x * x).mean(axes)), (x,)),
        ('output + residual + ReLU', 3,
         lambda x, r: norm.apply(x, mean, one, mean, r, relu=True),
         lambda x, r: jnp.maximum((x - mean) * one + mean + r, 0.0), (x, residual)),
        ('gradient sums', 3,
         lambda dy, x, out: norm.grad_sums(dy, x, out, mean, relu=True),
         lambda dy, x, out: (masked(dy, out).sum(axes),
                             (masked(dy, out) * (x - mean)).sum(axes)), (dy, x, out)),
        ('input gradient + residual\'s', 5,
         lambda dy, x, out: norm.grad_input(dy, x, out, mean, one, one, mean, relu=True,
                                            with_g=True),
         lambda dy, x, out: (one * masked(dy, out) + one * (x - mean) + mean,
                             masked(dy, out)), (dy, x, out)),
    ]
    for name, tensors, ours, xla, args in cases:
      _, ours_ms = _best_ms(jax.jit(ours), args, repeats)
      _, xla_ms = _best_ms(jax.jit(xla), args, repeats)
      rows.append([str(shape), name, f'{ours_ms:.3f} ({tensors * mb / ours_ms:.0f} GB/s)',
                   f'{xla_ms:.3f} ({tensors * mb / xla_ms:.0f} GB/s)'])
      print(' | '.join(rows[-1]), flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=9)
  parser.add_argument('--save', default='', help='write every convolution output here')
  parser.add_argument('--compare', default='', help='a --save file to check bit for bit')
  parser.add_argument('--output', default=os.path.join(common.REPO, 'benchmarks', 'results',
                                                       'cpu_kernels.md'))
  args = parser.parse_args()
  if not conv_kernels.available():
    raise SystemExit('benchmarks/cpu_kernels.py: the compiled kernels are not available '
                     '(python -m models.conv_kernels says why).')
  outputs = {}
  conv = conv_rows(args.repeats, outputs)
  norms = norm_rows(args.repeats) if norm is not None else []
  notes = []
  if args.save:
    np.savez(args.save, **outputs)
  if args.compare:
    other = np.load(args.compare)
    differ = [k for k in outputs if k not in other or not np.array_equal(outputs[k], other[k])]
    notes.append(f'Against {args.compare}: {len(outputs) - len(differ)} of {len(outputs)} '
                 f'convolution outputs bit-identical' + (f'; differ: {differ}' if differ else '.'))
    print(notes[-1])
  table = common.markdown_table(['layer', 'input x kernel', 'pass', 'best ms', 'GFLOP/s'], conv)
  if norms:
    table += '\n\n' + common.markdown_table(['activation', 'BatchNorm pass', 'ours, median ms',
                                               "XLA's fusion, median ms"], norms)
  intro = (f'Each kernel jitted alone on fixed random inputs; convolutions best of '
           f'{args.repeats}, BatchNorm medians of {args.repeats}. `PYTHONPATH=. python '
           f'benchmarks/cpu_kernels.py`\n\n' + common.machine_description(['jax', 'jaxlib']))
  common.write_report(args.output, 'Compiled CPU kernels, one at a time', intro, table,
                      '\n'.join(notes))


if __name__ == '__main__':
  main()
