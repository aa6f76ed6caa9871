"""The shared command line of every experiment: `--workdir` and `--config.*` overrides."""
from __future__ import annotations

import os
import sys
from typing import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags


def run(config_file: str, main: Callable[[ml_collections.ConfigDict, str], object],
        default_workdir: str) -> None:
  """Parses `--config` (defaulting to `config_file`'s get_config) and `--workdir`, runs main.

  Example: `python -m experiments.dense_vs_conv --workdir=/tmp/dvc --config.num_epochs=3`.
  """
  config_flags.DEFINE_config_file('config', config_file, 'Experiment configuration.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', default_workdir, 'Where checkpoints, logs and reports go.')

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    # Quiet TensorFlow's C++ start-up chatter and absl's backend probing at INFO;
    # tf.data runs on the CPU only.
    logging.set_verbosity(logging.WARNING)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
    # Before JAX touches a device: joins a multi-process run if REDCONV_* say so.
    from train import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize(flags.FLAGS.config.get('distributed'))
    main(flags.FLAGS.config, flags.FLAGS.workdir)

  app.run(_main, argv=sys.argv)
