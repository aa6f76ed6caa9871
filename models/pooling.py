"""2x2 max-pooling with stride 2 as a reshape and a max, with `nn.max_pool`'s gradient.

Why not `nn.max_pool(x, (2, 2), strides=(2, 2))`: on XLA:CPU its gradient is lowered
through `reduce_window` over (value, index) pairs and `select_and_scatter`, which
took about half of the CNN's training step on a 2-core CPU (jax 0.10.2; see
benchmarks/README.md). Windows that do not overlap are just a reshape, so the forward
pass is one fused max and the backward pass an elementwise select.

The result is the same function with the same gradient: on ties the whole gradient
goes to the first maximum in row-major window order, as XLA's `select_and_scatter`
with `>=` does (a plain `reshape(...).max()` would split it evenly among ties, which
differs after a ReLU, where whole windows of zeros are common).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _windows(x: jnp.ndarray) -> jnp.ndarray:
  """`[B, H, W, C]` -> `[B, H//2, 2, W//2, 2, C]`; an odd last row/column is dropped."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2, :]
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


def _first_max(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(max `[B, H//2, W//2, C]`, index 0..3 of the first maximum in row-major window order)."""
  w = _windows(x)
  best, index = w[:, :, 0, :, 0, :], jnp.zeros(w.shape[:2] + w.shape[3:4] + w.shape[5:], jnp.int8)
  for k, (dy, dx) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
    candidate = w[:, :, dy, :, dx, :]
    # Strictly greater: on ties the earlier position keeps the gradient.
    better = candidate > best
    best = jnp.where(better, candidate, best)
    index = jnp.where(better, jnp.int8(k), index)
  return best, index


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """`[B, H, W, C]` -> `[B, H//2, W//2, C]`, the max of each 2x2 window (VALID padding)."""
  # Elementwise maxima of the four window positions, not a reduce over the window axes:
  # XLA:CPU fuses the producers (in eval: the convolution, BatchNorm and ReLU) into the
  # pooling, and as a reduce fusion that ran ~5x slower than this loop fusion (the
  # CNN's prediction pass, benchmarks/README.md). Max is exact: the same values.
  w = _windows(x)
  return jnp.maximum(jnp.maximum(w[:, :, 0, :, 0, :], w[:, :, 0, :, 1, :]),
                     jnp.maximum(w[:, :, 1, :, 0, :], w[:, :, 1, :, 1, :]))


def _forward(x):
  # The winner's index is saved rather than found again by comparing x with the max in
  # the backward pass: XLA may recompute x there with different rounding, and an
  # equality test against the max would then drop the gradient.
  y, index = _first_max(x)
  return y, (index, x.shape)


def _backward(residuals, g):
  index, x_shape = residuals
  b, h, w, c = g.shape
  # Window position (dy, dx) is index 2 * dy + dx; one select over [B, h, 2, w, 2, C]
  # with g and the index broadcast. (Four selects stacked into place were a
  # concatenation fusion to XLA:CPU: 3.7 ms of a CNN step against this one's 3.0.)
  positions = jnp.arange(4, dtype=index.dtype).reshape(1, 1, 2, 1, 2, 1)
  grad = jnp.where(index[:, :, None, :, None, :] == positions, g[:, :, None, :, None, :],
                   jnp.zeros((), g.dtype))
  grad = grad.reshape(b, 2 * h, 2 * w, c)
  pad_h, pad_w = x_shape[1] - 2 * h, x_shape[2] - 2 * w
  if pad_h or pad_w:
    grad = jnp.pad(grad, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  return (grad,)


max_pool_2x2.defvjp(_forward, _backward)
