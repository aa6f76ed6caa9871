"""BatchNorm's training-mode passes on CPU, as the compiled kernels of batch_norm.cc
(and bn_pool.cc: with the ReLU and a 2x2 max-pooling after it).

Each function takes activations with the channels on the last axis and per-channel
`[C]` vectors, runs one pass over its tensors on XLA's intra-op threads, and exists
only where `conv_kernels.available()` (models/batch_norm.py decides, when tracing, to
call these or XLA's own arithmetic). Sums accumulate in double and do not depend on the
thread count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _call(target: str, shapes, *args, dtypes=None, **attrs):
  dtypes = dtypes or (jnp.float32,) * len(shapes)
  results = tuple(jax.ShapeDtypeStruct(s, d) for s, d in zip(shapes, dtypes))
  call = jax.ffi.ffi_call(target, results if len(results) > 1 else results[0],
                          vmap_method='sequential')
  return call(*args, **{k: np.int64(v) for k, v in attrs.items()})


def stats(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`(mean, var)` `[C]` over every axis but the last; var = max(0, E[x^2] - E[x]^2)."""
  channels = (x.shape[-1],)
  return _call('redconv_bn_stats', (channels, channels), x)


def apply(x: jnp.ndarray, mean: jnp.ndarray, mul: jnp.ndarray, bias: jnp.ndarray,
          residual: jnp.ndarray | None, relu: bool) -> jnp.ndarray:
  """`act((x - mean) * mul + bias [+ residual])`, act the ReLU if `relu`."""
  if residual is None:
    return _call('redconv_bn_apply', (x.shape,), x, mean, mul, bias, relu=relu)
  return _call('redconv_bn_apply_residual', (x.shape,), x, mean, mul, bias, residual,
               relu=relu)


def grad_sums(out_grad: jnp.ndarray, x: jnp.ndarray, out: jnp.ndarray | None,
              mean: jnp.ndarray, relu: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`(sum of g, sum of g * (x - mean))` `[C]`, g = out_grad where out > 0 (else 0) if
  `relu`, else out_grad."""
  channels = (x.shape[-1],)
  return _call('redconv_bn_grad_sums', (channels, channels), out_grad, x,
               out if relu else x, mean, relu=relu)


def grad_input(out_grad: jnp.ndarray, x: jnp.ndarray, out: jnp.ndarray | None,
               mean: jnp.ndarray, a: jnp.ndarray, k: jnp.ndarray, d: jnp.ndarray,
               relu: bool, with_g: bool):
  """`a * g + k * (x - mean) + d` (g as in `grad_sums`), and g too if `with_g`."""
  args = (out_grad, x, out if relu else x, mean, a, k, d)
  if with_g:
    return _call('redconv_bn_grad_input_residual', (x.shape, x.shape), *args, relu=relu)
  return _call('redconv_bn_grad_input', (x.shape,), *args, relu=relu)


def pooled_shape(x_shape: tuple[int, ...]) -> tuple[int, ...]:
  """`[B, H, W, C]` -> `[B, H // 2, W // 2, C]`: 2x2 windows, stride 2 (an odd last row
  or column is dropped, as models/pooling.py does)."""
  if len(x_shape) != 4 or min(x_shape[1:3]) < 2:
    raise ValueError(f'batch-norm + pooling: expected x [B, H, W, C] with H, W >= 2, got '
                     f'shape {tuple(x_shape)}')
  b, h, w, c = x_shape
  return (b, h // 2, w // 2, c)


def apply_pool(x: jnp.ndarray, mean: jnp.ndarray, mul: jnp.ndarray, bias: jnp.ndarray
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`(pooled, winner)` `[B, H/2, W/2, C]` for x `[B, H, W, C]`: the 2x2 max of
  `relu((x - mean) * mul + bias)`, and int32 the window position 0..3 (row-major) of
  each first maximum, -1 where that maximum is 0 (no gradient passes the ReLU)."""
  shape = pooled_shape(x.shape)
  return _call('redconv_bn_apply_pool', (shape, shape), x, mean, mul, bias,
               dtypes=(jnp.float32, jnp.int32))


def pool_grad_sums(pooled_grad: jnp.ndarray, winner: jnp.ndarray, x: jnp.ndarray,
                   mean: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`grad_sums` with g the pooling's gradient: `pooled_grad` at each window's winner,
  0 elsewhere (`winner` from `apply_pool`)."""
  channels = (x.shape[-1],)
  return _call('redconv_bn_pool_grad_sums', (channels, channels), pooled_grad, winner, x,
               mean)


def pool_grad_input(pooled_grad: jnp.ndarray, winner: jnp.ndarray, x: jnp.ndarray,
                    mean: jnp.ndarray, a: jnp.ndarray, k: jnp.ndarray, d: jnp.ndarray
                    ) -> jnp.ndarray:
  """`a * g + k * (x - mean) + d` with g as in `pool_grad_sums`."""
  return _call('redconv_bn_pool_grad_input', (x.shape,), pooled_grad, winner, x, mean, a, k,
               d)
