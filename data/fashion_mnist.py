"""Fashion-MNIST (Zalando): 70,000 28x28 grayscale clothing images in 10 classes.

Two sources give the same examples in the same order:
  - `fashion_mnist_tfds`: `tfds.load('fashion_mnist')`; downloads when online, or
    prepares offline from the four official files in `manual_dir`.
  - `fashion_mnist_idx`: reads the four official IDX files from `data_dir` directly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import idx
from data.sources import SOURCES, Source

CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
               'Sneaker', 'Bag', 'Ankle boot')
IMAGE_SHAPE = (28, 28, 1)


@SOURCES.register('fashion_mnist_idx')
def idx_source(split: str, data_dir: str, **unused: Any) -> Source:
  """`data_dir` holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-*."""
  images, labels = idx.load_split(data_dir, split)
  if images.shape[1:] != IMAGE_SHAPE:
    raise idx.IdxFormatError(
        f'{data_dir}: split {split!r} has images of shape {images.shape[1:]}, '
        f'expected {IMAGE_SHAPE} for Fashion-MNIST.')
  bad = np.flatnonzero((labels < 0) | (labels >= len(CLASS_NAMES)))
  if bad.size:
    raise idx.IdxFormatError(
        f'{idx._find(data_dir, idx.SPLIT_FILES[split][1])}: example {bad[0]} has '
        f'label {labels[bad[0]]}, expected [0, {len(CLASS_NAMES) - 1}] '
        f'({bad.size} such labels in split {split!r}).')
  dataset = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
  return Source(dataset, len(labels), CLASS_NAMES, IMAGE_SHAPE)


@SOURCES.register('fashion_mnist_tfds')
def tfds_source(split: str, tfds_data_dir: str | None = None,
                manual_dir: str | None = None, **unused: Any) -> Source:
  """TFDS `fashion_mnist`; `manual_dir` holding the official files avoids a download."""
  builder = tfds.builder('fashion_mnist', data_dir=tfds_data_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=download_config)
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  dataset = dataset.map(
      lambda ex: {'image': ex['image'], 'label': tf.cast(ex['label'], tf.int32)},
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  num_examples = builder.info.splits[split].num_examples
  return Source(dataset, num_examples, CLASS_NAMES, IMAGE_SHAPE)
