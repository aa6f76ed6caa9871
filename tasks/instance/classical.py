"""The classical baseline on a source's original images, in the model's COCO terms.

models/classical.py segments one image (Otsu threshold + connected components); here
every original image of an evaluation source goes through it, and its objects become
COCO results (tasks/instance/coco_eval.py, at scale 1) that score_results rates against
the same ground truth as the model: the row a learned model has to beat.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from data.coco import nearest_indices
from data.sources import Source
from models import classical
from tasks.instance import coco_eval


def classical_results(source: Source, min_size: int = 10
                      ) -> tuple[list[dict], dict[int, np.ndarray]]:
  """COCO results of models/classical.py on every original image of `source` (its
  `metadata['ground_truth']` lists them, `metadata['image_dir']` holds them), all of
  the source's first category, and the instance masks bool [n, h, w] per image id."""
  truth = source.metadata['ground_truth']
  results, masks_by_id = [], {}
  for image_id in sorted(truth.imgs):
    with Image.open(os.path.join(source.metadata['image_dir'],
                                 truth.imgs[image_id]['file_name'])) as image:
      pixels = np.asarray(image.convert('RGB'))
    boxes, scores, masks = classical.objects(pixels, min_size=min_size)
    masks_by_id[image_id] = masks
    count, size = len(boxes), np.array([pixels.shape[:2]])
    detections = {'boxes_xyxy': boxes[None], 'scores': scores[None], 'masks': masks[None],
                  'classes': np.ones((1, count), np.int32), 'valid': np.ones((1, count), bool)}
    results += coco_eval.detections_to_coco(detections, [image_id], size, size,
                                            source.metadata['category_ids'])
  return results, masks_by_id


def at_model_input(masks: np.ndarray, original_size: tuple[int, int],
                   resized_size: tuple[int, int], image_shape: tuple[int, int]) -> np.ndarray:
  """bool [n, H, W]: masks [n, h, w] of an original image (h, w) = `original_size` put
  where the source puts the image: resized (nearest) to `resized_size` at the top left
  of a zero canvas `image_shape` (data/coco.py's resize and pad)."""
  height, width = (int(s) for s in original_size)
  rows, cols = (int(s) for s in resized_size)
  canvas = np.zeros((len(masks),) + tuple(image_shape), bool)
  canvas[:, :rows, :cols] = masks[:, nearest_indices(height, rows)][
      :, :, nearest_indices(width, cols)]
  return canvas
