"""A Mask R-CNN run through the COCO source, killed mid-epoch and resumed, ends the same.

The same guarantee as tests/train/test_loop.py for classification, on the path with
the most moving parts: a generator-backed COCO source, box/mask augmentation, and
anchor and RoI sampling driven by the step's key. The `coco` evaluator's AP of every
evaluation is in the history, so the resumed run keeps the one made before the stop.
"""
import chex
import ml_collections
import pytest

from data import augment, shapes
from data.sources import build_source
from models.mask_rcnn.model import MaskRCNN
from tasks.instance import evaluators  # noqa: F401  (registers the 'coco' evaluator)
from tasks.instance.task import instance_task
from train.loop import train_and_evaluate


def _run(workdir, data_dir, max_steps=None):
  config = ml_collections.ConfigDict(dict(
      seed=5, batch_size=8, eval_batch_size=8, num_epochs=2, log_every_steps=2,
      progress_bar=False, shuffle_buffer=100, evals=dict(coco=dict(type='coco')),
      optimizer=dict(name='adamw', learning_rate=2e-3, warmup_steps=2, weight_decay=1e-4)))
  data = {'source': 'coco_json', 'data_dir': data_dir, 'image_size': (32, 32),
          'max_instances': 3}
  model = MaskRCNN(num_classes=3, stem_width=8, stage_widths=(8, 16, 16), fpn_width=16,
                   fc_width=32, mask_head_width=16, num_rois=16, num_mask_rois=4,
                   rpn_pre_nms_topk_train=100, rpn_post_nms_topk_train=16, max_detections=5)
  return train_and_evaluate(
      config, str(workdir), model=model, train_source=build_source(data, 'train'),
      eval_source=build_source(data, 'val'), task=instance_task(0.5, 0.25),
      augment_fn=augment.build_policy('flip_lr|brightness(0.1)', drop_mode='invalidate'),
      max_steps=max_steps)


@pytest.mark.slow  # three compilations of the model: about 50 s
def test_resume_mid_epoch_gives_bitwise_the_same_model(tmp_path):
  data_dir = str(tmp_path / 'coco')
  kwargs = dict(image_size=(32, 32), max_instances=3, size_range=(0.15, 0.3))
  shapes.write_coco(data_dir, 24, seed=0, split='train', **kwargs)
  shapes.write_coco(data_dir, 8, seed=1, split='val', **kwargs)
  uninterrupted = _run(tmp_path / 'a', data_dir)
  first = _run(tmp_path / 'b', data_dir, max_steps=4)  # 3 steps per epoch: mid epoch 2
  assert int(first.state.step) == 4
  resumed = _run(tmp_path / 'b', data_dir)
  assert int(resumed.state.step) == 6
  chex.assert_trees_all_equal(resumed.state.params, uninterrupted.state.params)
  chex.assert_trees_all_equal(resumed.state.model_state, uninterrupted.state.model_state)
  assert resumed.eval_history == uninterrupted.eval_history
  assert [e['epoch'] for e in resumed.eval_history] == [1, 2]
  assert all(0.0 <= e['coco/segm/AP'] <= 1.0 for e in resumed.eval_history)
