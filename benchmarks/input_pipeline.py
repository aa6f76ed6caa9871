"""Can the host feed the accelerator? Images/s of every experiment's real training input
path, on 1 and on 2 host cores, against the rate its step consumes on an H100.

Each row is one entry of benchmarks/experiment_inputs.py: the experiment's config,
source, augmentation policy, batch size and shuffle buffer, run through
`data.pipeline.train_batches(source.records, ..., decode_fn=source.decode)` exactly as
train/loop.py calls it, pulled as NumPy batches. The training set is capped at
`--cap` examples per row (as `config.train_examples` caps it: the first N records), and
the rate is over whole epochs, so it includes filling the shuffle buffer and every
decode; `epoch 0` is the cold first epoch (a source that caches decoded examples is
faster afterwards), the `img/s` columns are the median of the later epochs.

Cores: every thread of the worker process is pinned (`os.sched_setaffinity` on each
task of /proc/self/task; new threads inherit it) to 1 or 2 CPUs, and the dataset's
tf.data thread pool is that size (`Options().threading.private_threadpool_size`,
`max_intra_op_parallelism = 1`). `img/CPU-s` divides by the process's CPU time (all
threads), the steadier figure on a shared machine.

Feeding an H100: issue 14 measured each model's jitted step on one H100 (bfloat16
column); a 16-core host feeds it when one core makes at least rate / 16 images/s
(assuming the input path scales linearly to 16 cores, which the 2-core column checks
only as far as 2).

  PYTHONPATH=. python benchmarks/input_pipeline.py [--rows ...] [--cap 4096]
prints the table and writes benchmarks/results/input_pipeline.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys

if __name__ == '__main__':  # before TensorFlow/JAX: re-run once with mimalloc (allocator.py)
  import allocator  # pylint: disable=g-import-not-at-top
  allocator.preload()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from benchmarks import common  # noqa: E402

DEFAULT_ROWS = ('mlp,airbench,airbench_host_augment,resnet20,unet_camvid,unet_isbi,'
                'mask_rcnn_coco128,mask_rcnn_coco20k,mask_rcnn_coco20k_records,mask_rcnn_shapes')
HOST_CORES = 16  # an H100 machine's host (issue 14)


def pin(cpus: set[int]) -> None:
  """Pins every thread of this process (and the threads they start) to `cpus`."""
  for tid in os.listdir('/proc/self/task'):
    try:
      os.sched_setaffinity(int(tid), cpus)
    except OSError:  # the thread ended meanwhile
      pass


def measure(key: str, cap: int, epochs: int, core_counts: list[int]) -> dict:
  from benchmarks import experiment_inputs  # pylint: disable=g-import-not-at-top
  from data import pipeline  # pylint: disable=g-import-not-at-top
  all_cpus = sorted(os.sched_getaffinity(0))
  with common.Clock() as build:
    built = experiment_inputs.build(key)
  source = built.source
  count = min(cap, source.num_examples)
  batch_size = int(built.config.batch_size)
  if count < source.num_examples:
    source = dataclasses.replace(source, records=source.records.take(count),
                                 num_examples=count)
  built = dataclasses.replace(built, source=source)
  images = count // batch_size * batch_size
  result = {'source': built.config.data.get('source'), 'examples': count, 'images': images,
            'batch_size': batch_size, 'build_s': build.wall, 'augment': built.spec['augment'],
            'augment_on': built.spec['augment_on'], 'shuffle_buffer': built.config.get('shuffle_buffer'), 'cores': {}}
  for cores in core_counts:
    pin(set(all_cpus[:cores]))
    times = []
    for epoch in range(epochs + 1):
      with common.Clock() as clock:
        pulled = sum(len(b['image']) for b in pipeline.as_numpy(
            experiment_inputs.train_batches(built, epoch, threads=cores)))
      assert pulled == images, (pulled, images)
      times.append((clock.wall, clock.cpu))
    later = times[1:]
    result['cores'][str(cores)] = {
        'epoch0_per_s': images / times[0][0],
        'per_s': statistics.median(images / w for w, _ in later),
        'per_cpu_s': statistics.median(images / c for _, c in later),
        'all_per_s': [images / w for w, _ in times], 'load_1min': os.getloadavg()[0]}
  pin(set(all_cpus))
  result['peak_rss_mib'] = common.peak_rss_mib()
  return result


def row(key: str, r: dict) -> list[str]:
  from benchmarks.experiment_inputs import ENTRIES  # pylint: disable=g-import-not-at-top
  entry = ENTRIES[key]
  one, two = r['cores'].get('1', {}), r['cores'].get('2', {})
  cells = [entry.title, f'`{r["source"]}`, {r["examples"]:,} examples',
           '`' + (r['augment'] or 'none').replace('|', '\\|') + '`'
           # In the jitted step (augment_on='device'): not part of the host's work.
           + (' in the step (device)' if r.get('augment_on') == 'device' and r['augment']
              else '')]
  for c in (one, two):
    cells += [f'{c["epoch0_per_s"]:,.0f}' if c else '', f'{c["per_s"]:,.0f}' if c else '',
              f'{c["per_cpu_s"]:,.0f}' if c else '']
  if entry.h100 and one:
    need = entry.h100[1] / HOST_CORES
    per_core = one['per_cpu_s']
    cells += [f'{entry.h100[1]:,}', f'{need:,.0f}',
              f'{"yes" if per_core >= need else "no"} ({per_core / need:.2f}x)']
  else:
    cells += ['not in the issue', '', '']
  loads = '/'.join(f'{c["load_1min"]:.1f}' for c in (one, two) if c)
  cells.append(f'build {r["build_s"]:.0f} s; load {loads}; peak RSS {r["peak_rss_mib"]:,.0f} '
               f'MiB')
  return cells


HEADERS = ['model, input (experiment config)', 'source', 'augmentation',
           '1 core: epoch 0 img/s', '1 core: img/s', '1 core: img/CPU-s',
           '2 cores: epoch 0 img/s', '2 cores: img/s', '2 cores: img/CPU-s',
           'H100 bf16 step img/s', 'needed per core (16 cores)', 'feeds from 16 cores?',
           'notes']


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default=DEFAULT_ROWS)
  parser.add_argument('--cap', type=int, default=4096, help='examples per row (first N)')
  parser.add_argument('--coco_cap', type=int, default=512, help='cap of the COCO rows')
  parser.add_argument('--epochs', type=int, default=2, help='timed epochs after epoch 0')
  parser.add_argument('--cores', default='1,2')
  parser.add_argument('--timeout', type=float, default=600.0)
  parser.add_argument('--output', default=os.path.join(common.REPO, 'benchmarks', 'results',
                                                      'input_pipeline.md'))
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  cores = [int(c) for c in args.cores.split(',')]
  if args.worker:
    cap = args.coco_cap if args.worker.startswith('mask_rcnn_coco') else args.cap
    common.emit_result(measure(args.worker, cap, args.epochs, cores))
    return
  from data.sources import registered_sources  # pylint: disable=g-import-not-at-top
  keys = [k for k in args.rows.split(',') if k]
  rows = []
  for key in keys:
    r = common.run_worker('benchmarks.input_pipeline',
                          ['--worker', key, '--cap', str(args.cap), '--coco_cap',
                           str(args.coco_cap), '--epochs', str(args.epochs), '--cores',
                           args.cores], args.timeout)
    print(key, r, file=sys.stderr, flush=True)
    if 'error' in r:
      rows.append([key, 'failed'] + [''] * (len(HEADERS) - 3) + [r['error']])
    else:
      rows.append(row(key, r))
  if 'coco_records' not in registered_sources():
    rows.append(['Mask R-CNN, COCO records', '`coco_records`', ''] + [''] * 9
                + ['no `coco_records` source in data/ on this branch'])
  table = common.markdown_table(HEADERS, rows)
  intro = (f'Caps: {args.cap:,} examples per row, {args.coco_cap:,} for the COCO rows; '
           f'epoch 0 and then {args.epochs} timed epochs (median) per core count. '
           '`PYTHONPATH=. python benchmarks/input_pipeline.py ' + ' '.join(sys.argv[1:]) +
           '`\n\n' + common.machine_description(['tensorflow-cpu', 'numpy']))
  notes = ('`feeds from 16 cores?`: images per CPU-second on 1 core (what one core makes '
           'when it is not shared) against the H100 bfloat16 step rate / '
           f'{HOST_CORES}; the ratio is how many times over it is met. Epoch 0 includes '
           'tracing the tf.data functions and, for a source that caches, the first decode.')
  print(table)
  common.write_report(args.output, 'Input pipelines vs. the H100 step', intro, table, notes)


if __name__ == '__main__':
  main()
