"""Peak memory and speed of one COCO training epoch: `coco_records` (data/coco_records.py)
against `coco_json` (data/coco.py), on a generated 20,000-image COCO set and on coco128.

Each row is one subprocess that builds the source and pulls one full epoch of
`data.pipeline.train_batches(source.records, decode_fn=source.decode, batch_size=8,
shuffle_buffer=...)` as NumPy batches, as the training loop does, with
experiments/instance_coco.py's data settings (image_size 256 x 256, max_instances 64,
shuffle buffer 10,000) and no augmentation. It reports its peak resident memory
(ru_maxrss), the epoch's wall and CPU seconds (user + system, all threads) and images/s.
A watchdog thread stops a row whose resident memory passes --rss_cap_mib (default 4 GiB)
and reports how far it got: the coco_json source decodes before the shuffle, so its
buffer holds up to 10,000 decoded examples (4.3 MB each at these settings: 43 GB).

The 20,000 images come from data/shapes.py write_coco (128 x 128 PNGs, 1-6 shapes
each) under --work_dir (never in the repo); both data sets are converted there first.

  PYTHONPATH=. nice -n 19 python benchmarks/coco_records_rss.py [--num_images=20000]
prints the table and writes benchmarks/results/coco_records_rss.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

if __name__ == '__main__':  # before TensorFlow: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from benchmarks import common  # noqa: E402

IMAGE_SIZE = (256, 256)  # experiments/instance_coco.py
MAX_INSTANCES = 64
BATCH_SIZE = 8
SHUFFLE_BUFFER = 10_000


def _cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _rss_mib() -> float:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def worker(source_name: str, data_dir: str, split: str, shuffle_buffer: int,
           rss_cap_mib: float) -> None:
  """One row: build the source, pull one epoch, print RESULT {json}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  from data import pipeline  # pylint: disable=g-import-not-at-top
  from data.sources import build_source  # pylint: disable=g-import-not-at-top
  progress = {'images': 0}
  start = time.perf_counter()

  def watchdog():
    while True:
      if _rss_mib() > rss_cap_mib:
        common.emit_result({'capped': True, 'images': progress['images'],
                            'peak_rss_mib': common.peak_rss_mib(),
                            'wall_s': time.perf_counter() - start, 'cpu_s': _cpu_s(),
                            'load_1min': os.getloadavg()[0]})
        os._exit(0)  # pylint: disable=protected-access
      time.sleep(0.05)

  threading.Thread(target=watchdog, daemon=True).start()
  with common.Clock() as build:
    source = build_source({'source': source_name, 'data_dir': data_dir,
                           'image_size': IMAGE_SIZE, 'max_instances': MAX_INSTANCES}, split)
  rss_built = _rss_mib()
  cpu0, wall0 = _cpu_s(), time.perf_counter()
  first_batch_s = None
  for batch in pipeline.as_numpy(pipeline.train_batches(
      source.records, decode_fn=source.decode, batch_size=BATCH_SIZE, seed=0, epoch=0,
      shuffle_buffer=shuffle_buffer)):
    if first_batch_s is None:
      first_batch_s = time.perf_counter() - wall0
    progress['images'] += len(batch['image_id'])
  wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
  common.emit_result({
      'capped': False, 'num_examples': source.num_examples, 'images': progress['images'],
      'build_s': build.wall, 'first_batch_s': first_batch_s, 'epoch_s': wall,
      'epoch_cpu_s': cpu, 'images_per_s': progress['images'] / wall,
      'images_per_cpu_s': progress['images'] / cpu, 'rss_built_mib': rss_built,
      'peak_rss_mib': common.peak_rss_mib(), 'load_1min': os.getloadavg()[0]})


def prepare(work_dir: str, num_images: int) -> dict[str, tuple[str, str, str]]:
  """Generates and converts the data sets once; {name: (coco dir, records dir, split)}."""
  from data import coco_records, shapes  # pylint: disable=g-import-not-at-top
  generated = os.path.join(work_dir, f'shapes{num_images}')
  if not os.path.isfile(os.path.join(generated, 'annotations', 'instances_train.json')):
    print(f'writing {num_images} images to {generated} ...', flush=True)
    shapes.write_coco(generated, num_images, seed=0, split='train')
  sets = {f'shapes {num_images:,} (128x128 PNG)': (generated, generated + '_records', 'train'),
          'coco128 train (JPEG, ~640x480)': (os.path.join(common.SHARED_DATA, 'coco128'),
                                             os.path.join(work_dir, 'coco128_records'),
                                             'train')}
  for coco_dir, records_dir, split in sets.values():
    if not os.path.isfile(os.path.join(records_dir, f'{split}.json')):
      print(f'converting {coco_dir} to {records_dir} ...', flush=True)
      with common.Clock() as clock:
        coco_records.convert(coco_dir, split, records_dir)
      print(f'  {clock.wall:.0f} s', flush=True)
  return sets


def _fmt(value, digits=0):
  return '' if value is None else f'{value:,.{digits}f}'


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--work_dir', default='/tmp/coco_records_rss')
  parser.add_argument('--num_images', type=int, default=20_000)
  parser.add_argument('--rss_cap_mib', type=float, default=4096)
  parser.add_argument('--timeout_s', type=float, default=3600)
  parser.add_argument('--out', default=os.path.join(common.REPO, 'benchmarks', 'results',
                                                    'coco_records_rss.md'))
  parser.add_argument('--worker', nargs=4, metavar=('SOURCE', 'DATA_DIR', 'SPLIT', 'BUFFER'))
  args = parser.parse_args(argv)
  if args.worker:
    source_name, data_dir, split, buffer = args.worker
    worker(source_name, data_dir, split, int(buffer), args.rss_cap_mib)
    return
  sets = prepare(args.work_dir, args.num_images)
  (small_name, small), (large_name, large) = sorted(
      sets.items(), key=lambda item: not item[0].startswith('coco128'))
  # Quick rows first; the report is rewritten after every row (a long row may be cut).
  plan = [('coco_records', small_name, small, SHUFFLE_BUFFER),
          ('coco_json', small_name, small, SHUFFLE_BUFFER),
          ('coco_json', large_name, large, SHUFFLE_BUFFER),
          ('coco_records', large_name, large, SHUFFLE_BUFFER),
          ('coco_records', large_name, large, 1000)]
  rows = []
  load_start = os.getloadavg()
  for source_name, data_name, (coco_dir, records_dir, split), buffer in plan:
    print(f'{source_name} on {data_name}, shuffle buffer {buffer:,} ...', flush=True)
    data_dir = records_dir if source_name == 'coco_records' else coco_dir
    result = common.run_worker(
        'benchmarks.coco_records_rss',
        ['--worker', source_name, data_dir, split, str(buffer),
         f'--rss_cap_mib={args.rss_cap_mib}'], args.timeout_s)
    print('  ' + json.dumps(result), flush=True)
    rows.append((source_name, data_name, buffer, result))
    _write(args, rows, load_start)


def _write(args, rows, load_start) -> None:
  headers = ['source', 'data', 'shuffle buffer', 'images', 'peak RSS MiB',
             'RSS after build MiB', 'epoch s', 'images/s', 'CPU s', 'images/CPU-s',
             'first batch s', 'load (1 min)']
  table_rows = []
  for source_name, data_name, buffer, r in rows:
    if 'error' in r:
      table_rows.append([source_name, data_name, f'{buffer:,}', r['error']] + [''] * 8)
    elif r['capped']:
      table_rows.append([source_name, data_name, f'{buffer:,}',
                         f'stopped: RSS > {args.rss_cap_mib:,.0f} MiB after '
                         f'{r["images"]:,} batched', _fmt(r['peak_rss_mib']), '',
                         _fmt(r['wall_s']), '', _fmt(r['cpu_s']), '', '',
                         _fmt(r['load_1min'], 1)])
    else:
      table_rows.append([source_name, data_name, f'{buffer:,}', f'{r["images"]:,}',
                         _fmt(r['peak_rss_mib']), _fmt(r['rss_built_mib']),
                         _fmt(r['epoch_s']), _fmt(r['images_per_s']), _fmt(r['epoch_cpu_s']),
                         _fmt(r['images_per_cpu_s'], 1), _fmt(r['first_batch_s'], 1),
                         _fmt(r['load_1min'], 1)])
  table = common.markdown_table(headers, table_rows)
  print(table)
  load_end = os.getloadavg()
  intro = (f'One training epoch of `data.pipeline.train_batches(source.records, '
           f'decode_fn=source.decode, batch_size={BATCH_SIZE})`, image_size '
           f'{IMAGE_SIZE[0]} x {IMAGE_SIZE[1]}, max_instances {MAX_INSTANCES} '
           '(experiments/instance_coco.py), no augmentation, one subprocess a row. '
           + common.machine_description(['tensorflow-cpu', 'pillow', 'pycocotools']) +
           f' Load average (1 min) at the start / at this write: {load_start[0]:.1f} / '
           f'{load_end[0]:.1f}; every command ran under `nice -n 19`.')
  notes = ('Peak RSS is ru_maxrss of the row\'s process; CPU s are user + system seconds '
           'of all its threads during the epoch (after building the source). '
           '`coco_json` (data/coco.py) shuffles image indices and decodes after (until '
           'commit 9d3671d it decoded every example in a Python generator before the '
           'shuffle, so its buffer held decoded examples, 4.3 MB each here: that run passed '
           'the 4 GiB cap while filling the buffer); its memory grows with the annotation '
           'JSON it holds, not with the buffer. A row passing the cap is stopped by its '
           'watchdog. '
           '`coco_records` shuffles the serialized records (the compressed image and '
           'RLE masks) and decodes after: its peak is the buffer times the record size '
           'plus a constant, whatever the number of images.\n\n'
           f'Command: `PYTHONPATH=. nice -n 19 python benchmarks/coco_records_rss.py '
           f'--num_images={args.num_images}`')
  common.write_report(args.out, 'COCO records: peak memory and speed of one epoch', intro,
                      table, notes)


if __name__ == '__main__':
  sys.exit(main())
