"""CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images in 10 classes.

Three sources give `{'image': uint8 [32, 32, 3], 'label': int32 []}` with the labels
in the official class order:
  - `cifar10_tfds`: `tfds.load('cifar10')`; downloads when online (`tfds_data_dir`,
    `manual_dir` passed through). Records keep the PNG bytes (SkipDecoding); decode
    runs after the training pipeline's shuffle, shard and skip.
  - `cifar10_bin`: the official binary release read from `data_dir` (the
    `cifar-10-batches-bin` folder or its parent): `data_batch_{1..5}.bin` for train,
    `test_batch.bin` for test; each record is 1 label byte + 3072 pixel bytes,
    channel-planar (1024 R, then 1024 G, then 1024 B, each row-major 32x32).
  - `cifar10_folder`: an image folder `data_dir/<split>/<class>/*.jpg`, e.g. the
    JPEG copy in ../shared/data/cifar10_jpeg (decoded once, cached in memory; or,
    with `cache=False`, decoded after the shuffle and shard: data/image_folder.py).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import image_folder
from data.sources import SOURCES, Source
from errors import UserError

CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
               'ship', 'truck')
IMAGE_SHAPE = (32, 32, 3)
RECORD_BYTES = 1 + 32 * 32 * 3
BIN_FOLDER = 'cifar-10-batches-bin'
SPLIT_FILES = {
    'train': tuple(f'data_batch_{i}.bin' for i in range(1, 6)),
    'test': ('test_batch.bin',),
}
# Training-set channel statistics (of pixels / 255), for normalisation.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class Cifar10FormatError(UserError, ValueError):
  """A binary CIFAR-10 file is missing, truncated or inconsistent; the message names it."""


def read_batch_file(path: str) -> tuple[np.ndarray, np.ndarray]:
  """One official `.bin` file -> (images [N, 32, 32, 3] uint8, labels [N] int32)."""
  with open(path, 'rb') as f:
    raw = f.read()
  if not raw or len(raw) % RECORD_BYTES:
    raise Cifar10FormatError(
        f'{path}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte records '
        f'(1 label byte + 3072 pixel bytes); the file is truncated or not CIFAR-10 binary '
        f'(a whole file holds 10,000 records, {10_000 * RECORD_BYTES} bytes).')
  records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD_BYTES)
  labels = records[:, 0].astype(np.int32)
  if labels.max() >= len(CLASS_NAMES):
    bad = int(np.argmax(labels >= len(CLASS_NAMES)))
    raise Cifar10FormatError(
        f'{path}: record {bad} has label {labels[bad]}, expected 0..{len(CLASS_NAMES) - 1}.')
  # Channel-planar [N, 3, 32, 32] -> interleaved [N, 32, 32, 3].
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def write_batch_file(path: str, images: np.ndarray, labels: np.ndarray) -> None:
  """Writes images [N, 32, 32, 3] uint8 and labels [N] in the official format (tests)."""
  images = np.asarray(images, np.uint8)
  if images.shape[1:] != IMAGE_SHAPE:
    raise ValueError(f'write_batch_file: images {images.shape}, expected [N, 32, 32, 3].')
  planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
  records = np.concatenate([np.asarray(labels, np.uint8)[:, None], planar], axis=1)
  with open(path, 'wb') as f:
    f.write(records.tobytes())


def load_binary_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """All records of `split` ('train' | 'test') from the official binary files."""
  if split not in SPLIT_FILES:
    raise ValueError(f'split {split!r}: expected one of {sorted(SPLIT_FILES)}.')
  if os.path.isdir(os.path.join(directory, BIN_FOLDER)):
    directory = os.path.join(directory, BIN_FOLDER)
  paths = [os.path.join(directory, name) for name in SPLIT_FILES[split]]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(
        f'CIFAR-10 binary files {missing} not found. Download cifar-10-binary.tar.gz from '
        'https://www.cs.toronto.edu/~kriz/cifar.html, extract it and set '
        'config.data.data_dir to the extracted folder, or use cifar10_tfds.')
  parts = [read_batch_file(p) for p in paths]
  return (np.concatenate([images for images, _ in parts]),
          np.concatenate([labels for _, labels in parts]))


@SOURCES.register('cifar10_bin')
def binary_source(split: str, data_dir: str, **unused: Any) -> Source:
  images, labels = load_binary_split(data_dir, split)
  dataset = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
  return Source(dataset, len(labels), CLASS_NAMES, IMAGE_SHAPE)


@SOURCES.register('cifar10_tfds')
def tfds_source(split: str, tfds_data_dir: str | None = None,
                manual_dir: str | None = None, **unused: Any) -> Source:
  """TFDS `cifar10` (its label order is the official one)."""
  builder = tfds.builder('cifar10', data_dir=tfds_data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  records = builder.as_dataset(split=split, shuffle_files=False,
                               decoders={'image': tfds.decode.SkipDecoding()})
  # TFDS datasets know their length; so do the ones `tfds.testing.mock_data` makes,
  # whose builder info has no splits.
  num_examples = int(records.cardinality())
  if num_examples < 0:
    num_examples = builder.info.splits[split].num_examples
  records = records.map(lambda ex: {'image': ex['image'],
                                    'label': tf.cast(ex['label'], tf.int32)})
  image_feature = builder.info.features['image']

  def decode(record):
    return {'image': tf.ensure_shape(image_feature.decode_example(record['image']),
                                     IMAGE_SHAPE), 'label': record['label']}

  return Source(records, num_examples, CLASS_NAMES, IMAGE_SHAPE, decode=decode)


@SOURCES.register('cifar10_folder')
def folder_source(split: str, data_dir: str, cache: bool = True, **unused: Any) -> Source:
  """`data_dir/<split>/<class>/*.jpg` with the ten official class names as folders."""
  paths, labels, _ = image_folder.list_files(data_dir, split, CLASS_NAMES)
  return image_folder.folder_source(paths, labels, CLASS_NAMES, IMAGE_SHAPE, cache)
