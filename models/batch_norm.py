"""`BatchNorm`: flax's `nn.BatchNorm`, with a training-mode gradient that reads each
tensor fewer times on CPU.

Differentiating flax's BatchNorm leaves XLA:CPU memory-bound passes over the
activations: per BatchNorm + ReLU layer 4 forward (one stores `x - mean` for the
backward pass) and 6 backward, about a third of a ResNet-20 or U-Net training step once
the convolutions run on our kernels (benchmarks/README.md). Here a custom VJP keeps only
the input (and after a ReLU its output, which the next layer keeps anyway), and the
backward pass is the textbook one: two per-channel sums, of dy and of dy * x_hat, and
one elementwise pass
  dx = scale * rstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
with the ReLU's mask and a block's residual add folded in (`relu=`, `residual=`).
Where the compiled kernels are built (models/conv_kernels/norm.py) each step is one
pass of our own over its tensors: statistics and output forward, sums and dx backward
(2 + 2, at about twice the memory bandwidth of XLA's fusions); else XLA's arithmetic,
3 passes forward and 5 backward.
With `pool=True` (after the ReLU, x `[B, H, W, C]`) the layer ends with the 2x2
max-pooling of models/pooling.py, and with the kernels that too is in the same two
passes forward and two backward (conv_kernels/bn_pool.cc; `fused_train_pool` below).
Same parameters, statistics, names and initial values as `nn.BatchNorm` (a subclass
whose class name flax uses for the auto name `BatchNorm_<i>`), so checkpoints load
either way. Forward values: flax's up to float32 rounding with the kernels (statistics
summed in double), bit for bit without them; gradients equal up to rounding.

The fast path applies in training mode to float32 inputs with the defaults our models
use (features on the last axis, scale and bias, fast variance, no mask, no `axis_name`)
and only when lowering for CPU (`lax.platform_dependent`: a GPU or TPU compiles flax's
own arithmetic, which XLA fuses well there). Anything else is `nn.BatchNorm` itself
(then models/pooling.py with `pool`).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
# flax's own helpers, so that every case off the fast path is exactly nn.BatchNorm.
from flax.linen.normalization import _canonicalize_axes, _compute_stats, _normalize

from models import conv_kernels
from models.conv_kernels import norm as norm_kernels
from models.pooling import max_pool_2x2


def reference_train(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray,
                    epsilon: float) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """flax's training-mode arithmetic: `(y, batch mean, batch variance)`, statistics
  over every axis but the last (fast variance: E[x^2] - E[x]^2, clipped at 0)."""
  mean, var = _compute_stats(x, tuple(range(x.ndim - 1)), dtype=None, axis_name=None,
                             use_fast_variance=True)
  y = (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
  return y, mean, var


def _finish(y, residual, relu: bool):
  if residual is not None:
    y = y + residual
  return jax.nn.relu(y) if relu else y


def _reference_fused(x, scale, bias, residual, epsilon, relu):
  """`(act(y + residual), mean, var)`: flax's arithmetic, autodiff's gradient."""
  y, mean, var = reference_train(x, scale, bias, epsilon)
  return _finish(y, residual, relu), mean, var


def _kernel_fused(x, scale, bias, residual, epsilon, relu):
  """`_reference_fused`'s function in two compiled passes (conv_kernels/norm.py): the
  statistics (summed in double), then the output."""
  mean, var = norm_kernels.stats(x)
  mul = lax.rsqrt(var + epsilon) * scale
  return norm_kernels.apply(x, mean, mul, bias, residual, relu), mean, var


def _cpu_fused(x, scale, bias, residual, epsilon, relu):
  # Decided when tracing: the compiled passes where they were built, else XLA's.
  fused = _kernel_fused if conv_kernels.available() else _reference_fused
  return fused(x, scale, bias, residual, epsilon, relu)


def _input_grad_terms(a, rstd, scale_grad, sum_grad, mean_grad, var_grad, count):
  """`(c, d)` of dx = a dy + c x_hat + d per channel: the gradient through x_hat, plus the
  (usually zero) cotangents of the returned statistics, d mean / dx = 1 / count and
  d var / dx = 2 (x - mean) / count."""
  c = (2.0 * var_grad / rstd - a * scale_grad) / count
  d = (mean_grad - a * sum_grad) / count
  return c, d


def _compiled_grads(x, scale, mean, var, mean_grad, var_grad, epsilon, grad_sums, grad_input):
  """`(grad_input(a, k, d), scale_grad, bias_grad)`: the backward pass with the compiled
  passes, `grad_sums()` the per-channel sums of g and g * (x - mean), `grad_input` the
  elementwise a g + k (x - mean) + d (plain or through the pooling's winners)."""
  count = x.size // x.shape[-1]
  rstd = lax.rsqrt(var + epsilon)
  a = scale * rstd
  sum_grad, centered_grad = grad_sums()
  scale_grad = rstd * centered_grad
  c, d = _input_grad_terms(a, rstd, scale_grad, sum_grad, mean_grad, var_grad, count)
  return grad_input(a, c * rstd, d), scale_grad, sum_grad


@functools.lru_cache(maxsize=None)
def _fused_train(relu: bool, with_residual: bool):
  """`(x, scale, bias, residual, epsilon) -> (out, mean, var)` with its custom VJP."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
  def train(x, scale, bias, residual, epsilon):
    return _cpu_fused(x, scale, bias, residual, epsilon, relu)

  def forward(x, scale, bias, residual, epsilon):
    out, mean, var = _cpu_fused(x, scale, bias, residual, epsilon, relu)
    # Kept: the input (the convolution before us keeps it anyway), not x - mean; after
    # a ReLU its output too (the next layer keeps it), whose sign is the ReLU's mask.
    return (out, mean, var), (x, scale, mean, var, out if relu else None)

  def backward(epsilon, residuals, cotangents):
    x, scale, mean, var, out = residuals
    out_grad, mean_grad, var_grad = cotangents
    if conv_kernels.available():
      # The same gradient in two compiled passes: the sums of g and g * (x - mean),
      # then dx (and the residual's g) in one.
      g_needed = with_residual and relu
      x_grad, scale_grad, sum_grad = _compiled_grads(
          x, scale, mean, var, mean_grad, var_grad, epsilon,
          lambda: norm_kernels.grad_sums(out_grad, x, out, mean, relu),
          lambda a, k, d: norm_kernels.grad_input(out_grad, x, out, mean, a, k, d, relu,
                                                  with_g=g_needed))
      if g_needed:
        x_grad, y_grad = x_grad
      else:
        y_grad = out_grad
      return x_grad, scale_grad, sum_grad, y_grad if with_residual else None
    count = x.size // x.shape[-1]
    rstd = lax.rsqrt(var + epsilon)
    a = scale * rstd
    y_grad = jnp.where(out > 0, out_grad, 0.0) if relu else out_grad
    axes = tuple(range(x.ndim - 1))
    # x_hat as x * rstd - mean * rstd: XLA would share a `x - mean` with the forward
    # pass's and store it, an extra pass each way. Two reductions, each fused with
    # its product, and one elementwise pass for dx.
    x_hat = x * rstd - mean * rstd
    sum_grad = jnp.sum(y_grad, axes)
    scale_grad = jnp.sum(y_grad * x_hat, axes)
    c, d = _input_grad_terms(a, rstd, scale_grad, sum_grad, mean_grad, var_grad, count)
    x_grad = a * y_grad + c * x_hat + d
    return x_grad, scale_grad, sum_grad, y_grad if with_residual else None

  train.defvjp(forward, backward)
  return train


def fused_train(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float,
                residual: jnp.ndarray | None = None,
                relu: bool = False) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """`(act(y + residual), mean, var)` for `y, mean, var = reference_train(...)`, act
  ReLU or identity; on CPU with the custom VJP above."""
  return lax.platform_dependent(
      x, scale, bias, residual,
      cpu=lambda *a: _fused_train(relu, residual is not None)(*a, epsilon),
      default=lambda x, scale, bias, residual: _reference_fused(x, scale, bias, residual,
                                                                epsilon, relu))


# BatchNorm + ReLU + 2x2 max-pooling: the CNN's blocks end so. Apart, the ReLU's output
# went full size to memory, the pooling read it, and the pooling's gradient wrote a
# full-size tensor (three quarters zeros) that both backward passes read. Fused, the
# forward pass writes the pooled quarter and each window's winner, and the backward
# passes read those instead (conv_kernels/bn_pool.cc): bit for bit the same values and
# gradients as the layers apart with the kernels (tests/models/test_batch_norm.py).


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _kernel_pooled_train(x, scale, bias, epsilon):
  return _kernel_pooled_forward(x, scale, bias, epsilon)[0]


def _kernel_pooled_forward(x, scale, bias, epsilon):
  mean, var = norm_kernels.stats(x)
  mul = lax.rsqrt(var + epsilon) * scale
  pooled, winner = norm_kernels.apply_pool(x, mean, mul, bias)
  return (pooled, mean, var), (x, scale, mean, var, winner)


def _kernel_pooled_backward(epsilon, residuals, cotangents):
  # `_fused_train`'s backward pass with the kernels, g read through the winners.
  x, scale, mean, var, winner = residuals
  pooled_grad, mean_grad, var_grad = cotangents
  return _compiled_grads(
      x, scale, mean, var, mean_grad, var_grad, epsilon,
      lambda: norm_kernels.pool_grad_sums(pooled_grad, winner, x, mean),
      lambda a, k, d: norm_kernels.pool_grad_input(pooled_grad, winner, x, mean, a, k, d))


_kernel_pooled_train.defvjp(_kernel_pooled_forward, _kernel_pooled_backward)


def fused_train_pool(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float
                     ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """`(max_pool_2x2(relu(y)), mean, var)` for `y, mean, var = reference_train(...)`,
  x `[B, H, W, C]`; on CPU with the kernels in one pass each way (see above), else
  `fused_train` then models/pooling.py."""
  def apart(x, scale, bias):
    out, mean, var = fused_train(x, scale, bias, epsilon, relu=True)
    return max_pool_2x2(out), mean, var
  if x.ndim != 4 or min(x.shape[1:3]) < 2 or not conv_kernels.available():
    return apart(x, scale, bias)
  return lax.platform_dependent(
      x, scale, bias, cpu=lambda *a: _kernel_pooled_train(*a, epsilon), default=apart)


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` (same fields and variables); see the module doc.

  `fast_gradient=False`: nn.BatchNorm's own arithmetic and autodiff gradient everywhere
  (bit for bit; the Mask R-CNN backbone keeps it, so that results recorded before this
  layer existed stay reproducible).
  """
  fast_gradient: bool = True

  def _fast_path_applies(self, x, use_running_average: bool, mask, residual) -> bool:
    return (self.fast_gradient and not use_running_average and mask is None
            and self.axis_name is None and not self.is_initializing()
            and (residual is None or (residual.shape == x.shape and residual.dtype == x.dtype))
            and _canonicalize_axes(x.ndim, self.axis) == (x.ndim - 1,)
            and x.dtype == jnp.float32 and self.dtype in (None, jnp.float32)
            and self.param_dtype == jnp.float32 and self.use_fast_variance
            and self.use_scale and self.use_bias and self.force_float32_reductions)

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None,
               residual: jnp.ndarray | None = None, relu: bool = False, pool: bool = False):
    """`nn.BatchNorm`'s output `y`, then `y + residual` if one is given, then the ReLU
    if `relu`: a block's `nn.relu(bn(x) + shortcut)`, in fewer passes on CPU. With
    `pool`, then models/pooling.py's 2x2 max-pooling (x `[B, H, W, C]`): after the ReLU
    one layer on CPU (`fused_train_pool`)."""
    use_running_average = nn.merge_param('use_running_average', self.use_running_average,
                                         use_running_average)
    feature_axes = _canonicalize_axes(x.ndim, self.axis)
    reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
    feature_shape = [x.shape[ax] for ax in feature_axes]
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32),
                            feature_shape)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32),
                           feature_shape)
    fast = self._fast_path_applies(x, use_running_average, mask, residual)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    elif fast:
      scale = self.param('scale', self.scale_init, feature_shape, self.param_dtype)
      bias = self.param('bias', self.bias_init, feature_shape, self.param_dtype)
      if pool and relu and residual is None:
        out, mean, var = fused_train_pool(x, scale, bias, self.epsilon)
        pool = False  # done
      else:
        out, mean, var = fused_train(x, scale, bias, self.epsilon, residual, relu)
    else:  # nn.BatchNorm.__call__'s own steps (flax 0.8-0.12) from here on
      mean, var = _compute_stats(
          x, reduction_axes, dtype=self.dtype,
          axis_name=self.axis_name if not self.is_initializing() else None,
          axis_index_groups=self.axis_index_groups,
          use_fast_variance=self.use_fast_variance, mask=mask,
          force_float32_reductions=self.force_float32_reductions)
    if not use_running_average and not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    if not fast:
      y = _normalize(self, x, mean, var, reduction_axes, feature_axes, self.dtype,
                     self.param_dtype, self.epsilon, self.use_bias, self.use_scale,
                     self.bias_init, self.scale_init, self.force_float32_reductions)
      out = _finish(y, residual, relu)
    return max_pool_2x2(out) if pool else out
