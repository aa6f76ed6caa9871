"""Greedy non-maximum suppression on one image, with static shapes (jit and vmap).

Semantics are torchvision's `nms` / `batched_nms` (used by detectron2): boxes are
visited in descending score order and a kept box removes every later box whose IoU
with it is strictly greater than `iou_threshold`. Equal scores keep the input order.

The greedy pass is parallel over boxes (no loop of one box per step): the K sorted
boxes are cut into tiles of `_TILE`; the kept boxes of earlier tiles suppress a tile
in one step, then a fixed-point iteration settles the tile (each step tests every box
of the tile at once), as TF's `non_max_suppression_padded` does. The suppression
matrix is computed once, only its blocks on and above the diagonal of tiles, and
bit-packed, 32 boxes per uint32 word. The kept set is
exactly greedy NMS's (argued in `_settle_tile`), in a few serial steps per tile in
practice and at most about K (a chain of boxes that each suppress the next), where a
`fori_loop` over the boxes took K serial steps. The first `max_outputs` survivors in
score order are returned as indices into the input with a validity mask. Callers
batch it with `jax.vmap` over images.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.mask_rcnn.box_ops import pairwise_iou


def _check_shapes(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, valid: jnp.ndarray | None):
  k = boxes_xyxy.shape[0]
  if boxes_xyxy.shape != (k, 4):
    raise ValueError(f'nms.py: boxes_xyxy must be [K, 4], got {boxes_xyxy.shape}.')
  if scores.shape != (k,):
    raise ValueError(f'nms.py: scores must be [K] = [{k}], got {scores.shape}.')
  if valid is not None and valid.shape != (k,):
    raise ValueError(f'nms.py: valid must be [K] = [{k}] bool, got {valid.shape}.')


# Boxes per tile. The serial steps are K / _TILE, plus per tile the longest chain of
# boxes each suppressing the next; a step within a tile reads _TILE**2 / 32 words, and
# smaller tiles skip more of the IoU matrix. On a 2-core CPU (batch 16, K = 1000 and
# 2000) 256 was as fast as 128 or faster on RPN proposals, with half the serial steps;
# 512 was slower everywhere. A multiple of _BITS.
_TILE = 256
_BITS = 32


def _pack_bits(bits: jnp.ndarray, axis: int) -> jnp.ndarray:
  """Packs `axis` of `bits` (bool, length T a multiple of 32) into T / 32 uint32 words.

  Entry `b * T / 32 + w` is bit b of word w: bits come from contiguous slices, so
  packing is an elementwise OR that fuses with the IoU feeding it and stays vectorised
  (packing 32 neighbours into a word does not, on XLA:CPU).
  """
  num_words = bits.shape[axis] // _BITS
  words = jax.lax.slice_in_dim(bits, 0, num_words, axis=axis).astype(jnp.uint32)
  for b in range(1, _BITS):
    bit = jax.lax.slice_in_dim(bits, b * num_words, (b + 1) * num_words, axis=axis)
    words = words | (bit.astype(jnp.uint32) << b)
  return words


def _suppressed(words: jnp.ndarray, packed_keep: jnp.ndarray) -> jnp.ndarray:
  """Which of T boxes a kept box suppresses: `[T]` bool.

  words: `[..., T / 32, T]` packed suppressors of each box; packed_keep: `[..., T / 32]`
  the packed kept flags of those suppressors.
  """
  return jnp.any((words & packed_keep[..., None]) != 0, axis=tuple(range(words.ndim - 1)))


def _settle_tile(tile_words: jnp.ndarray, candidates: jnp.ndarray) -> jnp.ndarray:
  """Greedy NMS inside one tile: `[T / 32, T]` packed suppressors, `[T]` bool -> `[T]`.

  `candidates` are the tile's boxes that no kept box of an earlier tile suppresses.
  Greedy NMS keeps box i iff it is a candidate and no kept box j < i of the tile
  suppresses it: keep = F(keep) with F(x)[i] = candidates[i] & ~any_{j<i} S[j, i] x[j].
  F(x)[i] reads only x[j] for j < i, so (induction on i) F has exactly one fixed point,
  the greedy result, and iterating x <- F(x) from any start makes boxes 0..r-1 final
  after r steps. The loop stops at the first x with F(x) = x: that x is the fixed
  point, hence exactly greedy, after at most T + 1 steps (a chain of boxes that each
  suppress the next) and a few in practice. Each step tests the whole tile at once.
  """
  def step(state):
    keep, _ = state
    new_keep = candidates & ~_suppressed(tile_words, _pack_bits(keep, 0))
    return new_keep, jnp.any(new_keep != keep)

  keep, _ = jax.lax.while_loop(lambda state: state[1], step, (candidates, jnp.array(True)))
  return keep


def _greedy_keep(sorted_boxes: jnp.ndarray, candidates: jnp.ndarray,
                 sorted_groups: jnp.ndarray | None, iou_threshold: float) -> jnp.ndarray:
  """Greedy NMS of boxes already in visiting order: `[K, 4]`, `[K]` bool -> keep `[K]`."""
  num_boxes = sorted_boxes.shape[0]
  # Pad to whole tiles; padding boxes are never candidates.
  tile = min(_TILE, -(-num_boxes // _BITS) * _BITS)
  num_tiles = -(-num_boxes // tile)
  pad = num_tiles * tile - num_boxes
  tiles = jnp.pad(sorted_boxes, ((0, pad), (0, 0))).reshape(num_tiles, tile, 4)
  candidates = jnp.pad(candidates, (0, pad)).reshape(num_tiles, tile)
  # Only an earlier box suppresses, so only the blocks (tile u, tile t) with u <= t of
  # the suppression matrix are computed, about half of it.
  rows, cols = np.triu_indices(num_tiles)
  suppresses = pairwise_iou(tiles[rows], tiles[cols]) > iou_threshold
  earlier = (rows < cols)[:, None, None] | (np.arange(tile)[:, None] < np.arange(tile))
  suppresses = suppresses & earlier
  if sorted_groups is not None:
    # Masking the IoU matrix is exact, unlike shifting boxes by group * extent (which
    # loses float32 precision on large offsets) and gives the same kept set.
    groups = jnp.pad(sorted_groups, (0, pad)).reshape(num_tiles, tile)
    suppresses = suppresses & (groups[rows][:, :, None] == groups[cols][:, None, :])
  # words[u, t] [T / 32, T]: bit j of column i says box j of tile u suppresses box i of
  # tile t; zero for u > t.
  words = jnp.zeros((num_tiles, num_tiles, tile // _BITS, tile), jnp.uint32)
  words = words.at[rows, cols].set(_pack_bits(suppresses, 1))

  def settle(t, keep):
    # keep is final for the tiles before t: tiles are settled in order.
    earlier_kept = _pack_bits(keep & (jnp.arange(num_tiles) < t)[:, None], 1)
    tile_candidates = candidates[t] & ~_suppressed(words[:, t], earlier_kept)
    return keep.at[t].set(_settle_tile(words[t, t], tile_candidates))

  return jax.lax.fori_loop(0, num_tiles, settle, candidates).reshape(-1)[:num_boxes]


def _greedy_nms(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, groups: jnp.ndarray | None,
                iou_threshold: float, max_outputs: int, valid: jnp.ndarray | None
                ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`nms`, where with `groups` only boxes of the same group suppress each other."""
  _check_shapes(boxes_xyxy, scores, valid)
  num_boxes = boxes_xyxy.shape[0]
  if valid is None:
    valid = jnp.ones((num_boxes,), bool)
  valid = valid.astype(bool)
  # Valid boxes first, then by descending score; lexsort is stable, so ties keep the
  # input order (torchvision's sort is not guaranteed stable).
  order = jnp.lexsort((-scores, ~valid)).astype(jnp.int32)
  keep = _greedy_keep(boxes_xyxy[order], valid[order],
                      None if groups is None else groups[order], iou_threshold)
  # A stable sort on "not kept" moves kept boxes to the front, still in score order.
  kept_first = jnp.argsort(~keep, stable=True)[:max_outputs]
  keep_valid = keep[kept_first]
  indices = jnp.where(keep_valid, order[kept_first], 0).astype(jnp.int32)
  if max_outputs > num_boxes:
    pad = max_outputs - num_boxes
    indices = jnp.concatenate([indices, jnp.zeros((pad,), jnp.int32)])
    keep_valid = jnp.concatenate([keep_valid, jnp.zeros((pad,), bool)])
  return indices, keep_valid


def nms(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, *, iou_threshold: float,
        max_outputs: int, valid: jnp.ndarray | None = None
        ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Greedy NMS of `boxes_xyxy [K, 4]` scored by `scores [K]` (one image).

  valid: optional `[K]` bool; invalid boxes (padding) are never kept and suppress
    nothing.
  Returns (indices `[max_outputs]` int32 into the K inputs, of the kept boxes in
  descending score order; keep_valid `[max_outputs]` bool). Slots beyond the number
  of kept boxes have keep_valid False and index 0.
  """
  return _greedy_nms(boxes_xyxy, scores, None, iou_threshold, max_outputs, valid)


def batched_nms(boxes_xyxy: jnp.ndarray, scores: jnp.ndarray, groups: jnp.ndarray, *,
                iou_threshold: float, max_outputs: int, valid: jnp.ndarray | None = None
                ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """NMS where boxes only suppress boxes of the same group (e.g. per-class NMS).

  groups: `[K]` int group id of each box (e.g. its class). Other arguments and the
  result as for `nms`: the kept boxes of all groups together, in descending score order.
  """
  if groups.shape != scores.shape:
    raise ValueError(f'nms.py: groups must be [K] = {scores.shape}, got {groups.shape}.')
  return _greedy_nms(boxes_xyxy, scores, groups, iou_threshold, max_outputs, valid)
