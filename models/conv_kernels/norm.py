"""BatchNorm's training-mode passes on CPU, as the compiled kernels of batch_norm.cc.

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


def _call(target: str, shapes, *args, **attrs):
  results = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)
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
