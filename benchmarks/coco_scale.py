"""A COCO-format folder of many images for input-pipeline measurements, made once.

`data.shapes.write_coco` draws ~8 256x256 examples a second on a loaded 2-core CPU, so
20,000 distinct ones would take ~40 minutes. For throughput and memory the content
does not matter, only the layout and the sizes: `distinct` examples are drawn once and
the set lists `count` images, image k a hard link to drawn example k % distinct, with
that example's annotations (new image and annotation ids). Every listed file is a real
PNG the source reads and decodes; the JSON has `count` image entries.

  PYTHONPATH=. python -m benchmarks.coco_scale [--count 20000] [--directory DIR]
"""
from __future__ import annotations

import argparse
import json
import os

DEFAULT_DIRECTORY = '/tmp/redconv_coco20k'
IMAGE_SIZE = (256, 256)
MAX_INSTANCES = 8


def write_repeated_coco(directory: str = DEFAULT_DIRECTORY, count: int = 20_000,
                        distinct: int = 1_000, val_count: int = 200, seed: int = 0) -> str:
  """Writes (once) `directory` with `count` train and `val_count` val images; returns it.

  A split whose JSON exists is kept: the JSON is written last, atomically.
  """
  from data import shapes  # pylint: disable=g-import-not-at-top
  kwargs = dict(image_size=IMAGE_SIZE, max_instances=MAX_INSTANCES)
  annotations_dir = os.path.join(directory, 'annotations')
  if not os.path.exists(os.path.join(annotations_dir, 'instances_val.json')):
    shapes.write_coco(directory, val_count, seed=seed + 1, split='val', **kwargs)
  train_json = os.path.join(annotations_dir, 'instances_train.json')
  if os.path.exists(train_json):
    return directory
  base = os.path.join(directory, 'distinct')
  base_json = os.path.join(base, 'annotations', 'instances_train.json')
  if not os.path.exists(base_json):
    shapes.write_coco(base, distinct, seed=seed, split='train', **kwargs)
  with open(base_json) as f:
    drawn = json.load(f)
  per_image: dict[int, list] = {}
  for annotation in drawn['annotations']:
    per_image.setdefault(annotation['image_id'], []).append(annotation)
  image_dir = os.path.join(directory, 'images', 'train')
  os.makedirs(image_dir, exist_ok=True)
  images, annotations = [], []
  for index in range(count):
    source = drawn['images'][index % len(drawn['images'])]
    file_name = f'{index:06d}.png'
    target = os.path.join(image_dir, file_name)
    if not os.path.exists(target):
      os.link(os.path.join(base, 'images', 'train', source['file_name']), target)
    images.append({**source, 'id': index, 'file_name': file_name})
    for annotation in per_image.get(source['id'], []):
      annotations.append({**annotation, 'id': len(annotations) + 1, 'image_id': index})
  partial = train_json + '.partial'
  with open(partial, 'w') as f:
    json.dump({**drawn, 'images': images, 'annotations': annotations}, f)
  os.replace(partial, train_json)
  return directory



def write_repeated_records(directory: str = DEFAULT_DIRECTORY) -> str:
  """`write_repeated_coco`'s train and val splits converted once by data/coco_records.py
  into `directory + '_records'`; returns that folder."""
  from data import coco_records  # pylint: disable=g-import-not-at-top
  out_dir = directory + '_records'
  for split in ('train', 'val'):  # the experiment builds both sources
    if not os.path.isfile(os.path.join(out_dir, f'{split}.json')):
      coco_records.convert(write_repeated_coco(directory), split, out_dir)
  return out_dir


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--directory', default=DEFAULT_DIRECTORY)
  parser.add_argument('--count', type=int, default=20_000)
  parser.add_argument('--distinct', type=int, default=1_000)
  args = parser.parse_args()
  print(write_repeated_coco(args.directory, args.count, args.distinct))


if __name__ == '__main__':
  main()
