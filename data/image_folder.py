"""Image-folder datasets: `root/<split>/<class>/<image>.{jpg,jpeg,png}`.

The example order is deterministic: classes in the given (or sorted) order, files
sorted by name within each class. The records are `{'path': string [], 'label': int32
[]}` and `decode` reads one image (tf.io.decode_image, in the training pipeline's
parallel map, after its shuffle, shard and skip).

`cache=True` (the default) is for a folder whose decoded images fit in memory: the
records are then the decoded examples themselves, decoded in order on first use and
kept (CIFAR-10: 50,000 x 3 KB = 150 MB), and `decode` is None. Every process decodes
the whole folder once, in its first epoch, and never again: measured on the 50,000
CIFAR-10 training JPEGs (one core, nice 19, load 8-9), an epoch of `train_batches`
costs 2.7 CPU-s on first use (18,100 images per CPU-second) and 0.25 CPU-s after
(about 200,000), against 2.7 CPU-s every epoch decoding lazily (18,600). Caching the
decoded images after the shuffle instead would keep nothing reusable (each epoch has
its own order and each host its own shard). `cache=False` decodes only this process's
examples of each epoch: for folders too large to hold.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import tensorflow as tf

from data.sources import SOURCES, Source
from errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


class ImageFolderError(UserError, ValueError):
  """The folder layout does not match what the source expects; the message says how."""


def _subfolders(directory: str) -> list[str]:
  return sorted(d for d in os.listdir(directory)
                if not d.startswith('.') and os.path.isdir(os.path.join(directory, d)))


def list_files(root: str, split: str, class_names: Sequence[str] | None = None
               ) -> tuple[list[str], list[int], tuple[str, ...]]:
  """(paths, labels, class names) of `root/split`, in a deterministic order.

  `class_names` fixes the label order (e.g. a dataset's official order) and must
  equal the set of class folders; None takes the sorted union of the class folders of
  every split under `root`, so that a split lacking a class (a small test split) gives
  every other class the same label as the training split does.
  """
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(
        f'image folder {split_dir!r} does not exist: expected '
        f'{os.path.join(root, split, "<class>", "<image>.jpg")} (set config.data.data_dir '
        'to the folder holding the split directories).')
  folders = _subfolders(split_dir)
  if class_names is None:
    splits = [os.path.join(root, d) for d in _subfolders(root)]
    class_names = tuple(sorted({c for s in splits for c in _subfolders(s)}))
  elif sorted(class_names) != folders:
    raise ImageFolderError(
        f'{split_dir}: class folders {folders}, expected exactly {sorted(class_names)}.')
  paths, labels = [], []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(split_dir, name)
    if name not in folders:
      continue  # a class only other splits have
    files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    paths += [os.path.join(class_dir, f) for f in files]
    labels += [label] * len(files)
  if not paths:
    raise ImageFolderError(f'{split_dir}: no {"/".join(IMAGE_EXTENSIONS)} images found.')
  return paths, labels, tuple(class_names)


def folder_records(paths: Sequence[str], labels: Sequence[int]) -> tf.data.Dataset:
  """`{'path': string [], 'label': int32 []}` records in the order of `paths`."""
  return tf.data.Dataset.from_tensor_slices(
      {'path': tf.constant(list(paths)), 'label': tf.constant(list(labels), tf.int32)})


def folder_decoder(image_shape: tuple[int, int, int]):
  """decode: a folder_records record -> `{'image': uint8 image_shape, 'label': int32 []}`;
  an image of another shape fails naming its file."""
  channels = image_shape[-1]

  def decode(record):
    path = record['path']
    # decode_image handles JPEG and PNG; expand_animations=False gives a 3-D tensor.
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                               expand_animations=False)
    shape = tf.shape(image)
    check = tf.debugging.Assert(
        tf.reduce_all(tf.equal(shape, tf.constant(image_shape, tf.int32))),
        [f'image_folder: expected every image to have shape {list(image_shape)}; file',
         path, 'has shape', shape])
    with tf.control_dependencies([check]):
      image = tf.identity(image)
    return {'image': tf.ensure_shape(image, image_shape), 'label': record['label']}

  return decode


def folder_source(paths: Sequence[str], labels: Sequence[int], class_names: Sequence[str],
                  image_shape: tuple[int, int, int], cache: bool) -> Source:
  """The Source of an image folder's files (see the module docstring for `cache`)."""
  records, decode = folder_records(paths, labels), folder_decoder(image_shape)
  if cache:
    records, decode = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                  deterministic=True).cache(), None
  return Source(records, len(paths), tuple(class_names), image_shape, decode=decode)


@SOURCES.register('image_folder')
def image_folder_source(split: str, data_dir: str, image_shape: Sequence[int],
                        class_names: Sequence[str] | None = None, cache: bool = True,
                        **unused: Any) -> Source:
  """Any `data_dir/<split>/<class>/*.jpg` folder; every image must be `image_shape`."""
  paths, labels, names = list_files(data_dir, split, class_names)
  shape = tuple(int(d) for d in image_shape)
  if len(shape) != 3:
    raise ValueError(f'image_folder: config.data.image_shape={shape}; expected [H, W, C].')
  return folder_source(paths, labels, names, shape, cache)
