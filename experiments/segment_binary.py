"""Binary segmentation with a U-Net (one sigmoid output): synthetic shapes or ISBI membranes.

The same experiment as experiments/segment_semantic.py (whose `main` this reuses)
with `model.num_classes = 1`: the mask is 0/1, the loss BCE + soft Dice, and the
report adds foreground Dice (F1), precision and recall.

Variants (`--config=experiments/segment_binary.py:<variant>`):
  shapes (default)  64x64 synthetic shapes, any shape vs. background. Target: Dice
                    >= 0.95 in <= 10 min on a 2-core CPU.
  isbi              ../shared/data/isbi_membrane: trained on slices 0-23 (192x192
                    random crops, flips, rotations), scored on the full 512x512 slices
                    24-29. Foreground = cell interior (label 255, ~78% of the pixels),
                    so also read the membrane Dice in the per-class table. Target:
                    foreground F1/Dice >= 0.90 in <= 20 min on 2 cores.
  runlocal          a smoke run on a few tiny synthetic images: seconds.
Commands:
  python -m experiments.segment_binary --workdir=workdirs/segment_binary_shapes
  python -m experiments.segment_binary --config=experiments/segment_binary.py:isbi \
      --workdir=workdirs/segment_isbi
Measured (2-core AMD EPYC CPU shared with other jobs, load 2-4, 2026-11-25): shapes
Dice 0.9937 in 8.7 min for the whole run; isbi foreground Dice 0.9513 (membrane Dice
0.793, mIoU 0.782) in 12.6 min. Rerun with Eigen convolutions (xla_cpu.py) on a 2-core
Intel Xeon, 2026-11-27: isbi foreground Dice 0.9509 (membrane 0.7923, mIoU 0.7812).
Rerun with the U-Net on the compiled kernels and the matrix-product upsampling (same
Xeon, 2026-11-27, other jobs of ours beside it): isbi foreground Dice 0.9513 (membrane
0.7937, mIoU 0.7825) in 14.6 min; shapes Dice 0.9933 in 3.9 min (quiet). Rerun with
BatchNorm's custom CPU gradient (models/batch_norm.py; same Xeon, 2026-11-27 afternoon,
one run after another, load ~1.8): isbi foreground Dice 0.9509 (membrane 0.7919, mIoU
0.7810) in 6.9 min (training 372 s); shapes Dice 0.9939 in 3.9 min. Rerun with
BatchNorm's passes as compiled kernels (models/conv_kernels/batch_norm.cc; same Xeon,
2026-11-27 evening, beside benchmarks of ours, no timing): isbi foreground Dice 0.9512
(membrane 0.7925, mIoU 0.7816); shapes Dice 0.9937. Rerun with Winograd's 3x3 kernel
(models/conv_kernels/winograd.cc) on a 2-core AMD EPYC (AVX2), 2026-12-07 19:29 UTC:
isbi foreground Dice 0.9510 (membrane 0.7923, mIoU 0.7813) in 11.5 min (training 604 s).
Rerun with Winograd's weight gradient (models/conv_kernels/winograd_weight_grad.cc) on
the 2-core Intel Xeon (AVX-512), 2026-12-07 22:32 UTC, quiet: isbi foreground Dice 0.9506
(membrane 0.7893, mIoU 0.7789) in 4.9 min (training 260 s), 0.0003 below the lowest of
the reruns above (0.9509-0.9513); `--config.seed=1` right after: 0.9518 (membrane
0.7988, mIoU 0.7865) in 4.7 min, so a seed moves it +-0.0006 and the change is noise.
"""
from __future__ import annotations

import ml_collections

from experiments import cli
from experiments import segment_semantic

main = segment_semantic.main


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'shapes'
  if variant not in ('shapes', 'isbi', 'runlocal'):
    raise ValueError(f'experiments/segment_binary.py:{variant}: expected shapes, isbi or '
                     'runlocal.')
  config = segment_semantic.get_config('runlocal' if variant == 'runlocal' else 'shapes')
  config.model.num_classes = 1
  config.data.target = 'binary'
  config.loss.dice_weight = 1.0
  if variant == 'shapes':
    config.num_epochs = 8
  elif variant == 'isbi':
    config.data = ml_collections.ConfigDict(dict(
        source='isbi_membrane', data_dir='../shared/data/isbi_membrane', train_slices=24))
    config.preprocess.std = 0.17
    config.train_repeats = 16  # 24 slices x 16 random crops per epoch
    config.augment = ('flip_lr|flip_ud|rotate(180)|random_crop(192, 192)'
                      '|brightness(0.1)|contrast(0.2)')
    config.model.depth = 4
    config.num_epochs = 12
    config.batch_size = 8
    config.eval_batch_size = 6
    config.optimizer.learning_rate = 2e-3
    config.log_every_steps = 16
    config.eval_every_epochs = 2
  return config


if __name__ == '__main__':
  cli.run(__file__, main, default_workdir='workdirs/segment_binary')
