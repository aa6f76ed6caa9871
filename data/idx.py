"""Reader of the IDX format (the files MNIST and Fashion-MNIST ship as).

An IDX file is: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions,
then one big-endian uint32 size per dimension, then the data. Labels are 1-D
(magic 0x00000801), images are 3-D [N, rows, cols] (magic 0x00000803). Files may be
gzipped (`.gz`); both spellings are accepted.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from errors import UserError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# The standard file names of the (Fashion-)MNIST release, per split.
SPLIT_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}


class IdxFormatError(UserError, ValueError):
  """An IDX file is missing, truncated or inconsistent; the message names it."""


def _find(directory: str, stem: str) -> str:
  for name in (stem + '.gz', stem):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(
      f'IDX file {stem}.gz (or {stem}) not found in {directory!r}. Download the '
      'four Fashion-MNIST files from https://github.com/zalandoresearch/fashion-mnist '
      '(data/fashion) into that directory, or use the tfds source.')


def _read_bytes(path: str) -> bytes:
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError) as e:  # gzip raises these on a truncated stream
    raise IdxFormatError(f'{path}: cannot be read ({e}); the file is corrupt or '
                         'truncated.') from e


def read_idx(path: str, expected_magic: int) -> np.ndarray:
  """Reads one IDX file into a uint8 array, validating its header and size."""
  raw = _read_bytes(path)
  if len(raw) < 4:
    raise IdxFormatError(f'{path}: {len(raw)} bytes, too short for an IDX header.')
  (magic,) = struct.unpack('>I', raw[:4])
  if magic != expected_magic:
    kind = 'images' if expected_magic == IMAGES_MAGIC else 'labels'
    raise IdxFormatError(
        f'{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x} '
        f'(uint8 {kind}, {expected_magic & 0xff}-D).')
  ndim = magic & 0xff
  header_len = 4 + 4 * ndim
  if len(raw) < header_len:
    raise IdxFormatError(f'{path}: header truncated ({len(raw)} of {header_len} bytes).')
  shape = struct.unpack('>' + 'I' * ndim, raw[4:header_len])
  expected = header_len + int(np.prod(shape))
  if len(raw) != expected:
    raise IdxFormatError(
        f'{path}: {len(raw)} bytes, expected {expected} for shape {list(shape)} '
        f'(header says so); the file is truncated or has trailing data.')
  return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def load_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images [N, H, W, 1] uint8, labels [N] int32) of one split."""
  if split not in SPLIT_FILES:
    raise ValueError(f'split {split!r}: expected one of {sorted(SPLIT_FILES)}.')
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f'IDX directory {directory!r} does not exist. Point config.data.data_dir at '
        'a folder holding the four Fashion-MNIST .gz files, or use the tfds source.')
  images_stem, labels_stem = SPLIT_FILES[split]
  images_path = _find(directory, images_stem)
  labels_path = _find(directory, labels_stem)
  images = read_idx(images_path, IMAGES_MAGIC)
  labels = read_idx(labels_path, LABELS_MAGIC)
  if images.ndim != 3:
    raise IdxFormatError(f'{images_path}: shape {images.shape}, expected [N, rows, cols].')
  if images.shape[0] != labels.shape[0]:
    raise IdxFormatError(
        f'{images_path} holds {images.shape[0]} images but {labels_path} holds '
        f'{labels.shape[0]} labels; the two files of split {split!r} must match.')
  return images[..., None], labels.astype(np.int32)


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as IDX (gzipped if `path` ends in .gz); used by tests."""
  array = np.asarray(array, dtype=np.uint8)
  header = struct.pack('>I', 0x00000800 | array.ndim)
  header += struct.pack('>' + 'I' * array.ndim, *array.shape)
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + array.tobytes())
