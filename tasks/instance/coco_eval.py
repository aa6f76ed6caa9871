"""COCO evaluation of instance detections (boxes and masks) with pycocotools.

The model sees each original image (h, w) resized to `resized_size` (rh, rw), each side
rounded on its own (data/coco.py), and padded at the bottom and right; it returns
fixed-size detections per batch:
  boxes_xyxy  float32 [B, D, 4]    model-input pixels, continuous convention (a pixel i
                                   covers [i, i+1)), as in data/augment_warp.py
  scores      float32 [B, D]
  classes     int32 [B, D]         contiguous labels 1..K; label k is the COCO category
                                   `category_ids[k - 1]` (COCO ids need not be contiguous)
  masks       [B, D, H, W]         optional: mask probabilities (or 0/1) pasted at the
                                   model input
  valid       bool [B, D]          False for padding
`detections_to_coco` maps them back to the original images as COCO results (boxes
[x, y, w, h], masks as compressed RLE with str counts, so the list is JSON-ready) with
the exact per-axis inverse of the resize: x * w / rw, y * h / rh. (Dividing both axes by
one scale factor, as an earlier version did, misplaces boxes by up to half a resized
pixel per side: ground truth fed back scored bbox AP 0.925, not 1, on odd-sized images
with tiny objects.) `evaluate` runs COCOeval per IoU type and returns its 12 summary
numbers, where -1 means "no ground truth of that kind" (e.g. no small objects), as in
COCOeval. `ground_truth_results` turns a source's own targets into results: scored, they
give the ceiling that the source's resize round trip leaves to any model.

Masks are resized bilinearly on probabilities, then thresholded (detectron2's
paste_masks_in_image does the same): when the original is larger than the model
input, nearest-neighbour on the binary mask would quantise each edge to the coarse
input grid (steps of 1 / scale original pixels); interpolating probabilities places
the 0.5 level between pixels and gives smooth, better-aligned edges.
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')
TABLE_COLUMNS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
# Masks are resized this many detections at a time: bounds the host memory of one
# image's float masks at its original size (COCO: 100 x 640 x 480 x 4 B = 123 MB).
MASK_CHUNK = 16


def _linear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices (lo, hi) and weight of hi, [out_size] each: half-pixel centres,
  edges clamped (tf.image.resize bilinear, cv2 INTER_LINEAR, align_corners=False)."""
  source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
  source = np.clip(source, 0, in_size - 1)
  lo = np.floor(source).astype(np.int64)
  hi = np.minimum(lo + 1, in_size - 1)
  return lo, hi, (source - lo).astype(np.float32)


def resize_bilinear(masks: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """float32 [N, h, w] -> [N, size[0], size[1]] by separable bilinear interpolation."""
  y_lo, y_hi, y_frac = _linear_taps(int(size[0]), masks.shape[1])
  x_lo, x_hi, x_frac = _linear_taps(int(size[1]), masks.shape[2])
  masks = masks.astype(np.float32)
  rows = masks[:, y_lo] * (1 - y_frac)[:, None] + masks[:, y_hi] * y_frac[:, None]
  return rows[:, :, x_lo] * (1 - x_frac) + rows[:, :, x_hi] * x_frac


def _encode(binary: np.ndarray) -> list[dict]:
  """Compressed RLEs (counts as str) of bool [N, h, w]."""
  rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
  return [{'size': [int(s) for s in r['size']], 'counts': r['counts'].decode('ascii')}
          for r in rles]


def _check_shape(name: str, array: np.ndarray, shape: tuple) -> None:
  if array.ndim != len(shape) or any(e is not None and a != e
                                      for a, e in zip(array.shape, shape)):
    raise ValueError(f'tasks/instance/coco_eval.py: {name} has shape {array.shape}; expected '
                     f'{tuple("*" if e is None else e for e in shape)}.')


def detections_to_coco(detections: Mapping[str, np.ndarray], image_ids: Sequence[int],
                       resized_sizes: np.ndarray, original_sizes: np.ndarray,
                       category_ids: Sequence[int], *, mask_threshold: float = 0.5
                       ) -> list[dict]:
  """COCO results (one dict per valid detection) in original-image pixels.

  detections: boxes_xyxy [B, D, 4], scores [B, D], classes [B, D] (1..K), valid [B, D]
  and optionally masks [B, D, H, W] (see the module docstring). image_ids [B];
  resized_sizes int [B, 2] and original_sizes int [B, 2], both (h, w): the un-padded
  size the source resized each original to, and the original's; category_ids [K]: the
  COCO id of each contiguous label. A box is scaled per axis by original / resized and
  clipped to the original image; a mask is cut to the resized region, resized to
  (h, w) and kept where probability >= mask_threshold. Without masks the results hold
  boxes only.
  """
  boxes = np.asarray(detections['boxes_xyxy'], np.float64)
  _check_shape('detections["boxes_xyxy"]', boxes, (None, None, 4))
  batch, num = boxes.shape[:2]
  scores = np.asarray(detections['scores'], np.float32)
  classes = np.asarray(detections['classes'], np.int64)
  valid = np.asarray(detections['valid'], bool)
  image_ids = np.asarray(image_ids, np.int64)
  resized_sizes = np.asarray(resized_sizes, np.int64)
  original_sizes = np.asarray(original_sizes, np.int64)
  for name, array, shape in (('scores', scores, (batch, num)), ('classes', classes, (batch, num)),
                             ('valid', valid, (batch, num)), ('image_ids', image_ids, (batch,)),
                             ('resized_sizes', resized_sizes, (batch, 2)),
                             ('original_sizes', original_sizes, (batch, 2))):
    _check_shape(name, array, shape)
  for name, sizes in (('resized_sizes', resized_sizes), ('original_sizes', original_sizes)):
    if (sizes < 1).any():
      raise ValueError(f'tasks/instance/coco_eval.py: {name} has {sizes[(sizes < 1).any(1)][0]}; '
                       'expected (h, w) >= 1.')
  masks = detections.get('masks')
  if masks is not None:
    _check_shape('detections["masks"]', masks, (batch, num, None, None))
    over = (resized_sizes > np.array(masks.shape[2:])).any(1)
    if over.any():
      raise ValueError(f'tasks/instance/coco_eval.py: resized_sizes has {resized_sizes[over][0]}, '
                       f'larger than the masks\' (H, W) = {masks.shape[2:]}.')
  bad = valid & ((classes < 1) | (classes > len(category_ids)))
  if bad.any():
    raise ValueError(f'tasks/instance/coco_eval.py: detections["classes"] has valid labels '
                     f'{sorted(set(classes[bad].tolist()))}; expected 1..{len(category_ids)} '
                     '(one per entry of category_ids).')
  category_ids = np.asarray(category_ids, np.int64)

  # Boxes, all at once: back to original pixels per axis, clipped to the image.
  factors = original_sizes / resized_sizes  # (h / rh, w / rw) per image
  limits = original_sizes[:, None, ::-1].astype(np.float64)  # (w, h) per image
  boxes[..., 0::2] = np.clip(boxes[..., 0::2] * factors[:, None, 1:], 0, limits[..., :1])
  boxes[..., 1::2] = np.clip(boxes[..., 1::2] * factors[:, None, :1], 0, limits[..., 1:])

  results = []
  for b in range(batch):
    kept = np.flatnonzero(valid[b])
    height, width = (int(s) for s in original_sizes[b])
    region_height, region_width = (int(s) for s in resized_sizes[b])
    rles = []
    if masks is not None and kept.size:
      for start in range(0, kept.size, MASK_CHUNK):
        chunk = np.asarray(masks[b, kept[start:start + MASK_CHUNK], :region_height,
                                 :region_width])
        rles += _encode(resize_bilinear(chunk, (height, width)) >= mask_threshold)
    for i, d in enumerate(kept):
      x0, y0, x1, y1 = (float(v) for v in boxes[b, d])
      result = {'image_id': int(image_ids[b]),
                'category_id': int(category_ids[classes[b, d] - 1]),
                'bbox': [x0, y0, x1 - x0, y1 - y0], 'score': float(scores[b, d])}
      if rles:
        result['segmentation'] = rles[i]
      results.append(result)
  return results


def ground_truth_results(examples: Mapping[str, np.ndarray], category_ids: Sequence[int]
                         ) -> list[dict]:
  """A batch of data/coco.py examples' own targets as COCO results (score 1).

  examples: boxes [B, N, 4], classes [B, N], instance_masks [B, N, H, W],
  instance_valid [B, N], is_crowd [B, N] (optional), image_id [B], resized_size [B, 2],
  original_size [B, 2]. Crowd regions are no targets and are left out. Scored against
  the annotation file, these give the best AP that a model reproducing its training
  targets exactly can reach after the resize and the way back (the ceiling at that
  image size).
  """
  valid = np.asarray(examples['instance_valid'], bool)
  if 'is_crowd' in examples:
    valid = valid & ~np.asarray(examples['is_crowd'], bool)
  detections = {'boxes_xyxy': examples['boxes'], 'classes': examples['classes'],
                'scores': np.ones(valid.shape, np.float32), 'valid': valid,
                'masks': examples['instance_masks']}
  return detections_to_coco(detections, examples['image_id'], examples['resized_size'],
                            examples['original_size'], category_ids)


class CocoReport(NamedTuple):
  """metrics: iou type -> the 12 COCOeval stats by STAT_NAMES; summaries: iou type ->
  COCOeval's printed table; per_category_ap: iou type -> category name -> AP."""
  metrics: dict[str, dict[str, float]]
  summaries: dict[str, str]
  per_category_ap: dict[str, dict[str, float]]


def _load_ground_truth(annotations: str | os.PathLike | COCO) -> COCO:
  if isinstance(annotations, COCO):
    return annotations
  with contextlib.redirect_stdout(io.StringIO()):
    return COCO(os.fspath(annotations))


def _load_results(coco_gt: COCO, results: list[dict], iou_type: str) -> COCO:
  """The results as a COCO object (an empty one when there are none: loadRes fails on [])."""
  if not results:
    coco_dt = COCO()
    coco_dt.dataset = {'images': list(coco_gt.dataset['images']), 'annotations': [],
                       'categories': list(coco_gt.dataset['categories'])}
    coco_dt.createIndex()
    return coco_dt
  # loadRes writes into each dict: copy. For masks, drop the boxes so that a
  # detection's area (its COCO size range) is that of its mask (detectron2 does so).
  drop = {'bbox'} if iou_type == 'segm' else set()
  return coco_gt.loadRes([{k: v for k, v in r.items() if k not in drop} for r in results])


def per_category_ap(coco_eval: COCOeval) -> dict[str, float]:
  """AP@[.5:.95] per category name (area all, 100 detections) of an accumulated COCOeval;
  -1 for a category without ground truth in the evaluated images."""
  precision = coco_eval.eval['precision'][:, :, :, 0, -1]  # [T, R, K]
  names = {c['id']: c['name'] for c in coco_eval.cocoGt.loadCats(coco_eval.params.catIds)}
  per_category = {}
  for k, category_id in enumerate(coco_eval.params.catIds):
    p = precision[:, :, k]
    per_category[names[category_id]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
  return per_category


def evaluate_report(annotations: str | os.PathLike | COCO, results: list[dict],
                    iou_types: Sequence[str] = ('bbox', 'segm'),
                    image_ids: Sequence[int] | None = None,
                    max_dets: Sequence[int] | None = None) -> CocoReport:
  """Runs COCOeval per iou type ('bbox', 'segm') on `image_ids` (None: all GT images).

  annotations: a COCO instances JSON path or a loaded COCO. COCOeval's printing is
  captured into `summaries`. Empty results score 0 wherever ground truth exists.
  max_dets: three increasing detection limits for `params.maxDets` (None: COCO's
  [1, 10, 100]); every AP uses the last (`AP` recomputed there: COCOeval's summary
  takes it at 100), and the stats named AR1, AR10, AR100 are then the recalls at these
  three limits.
  """
  if max_dets is not None and (len(max_dets) != 3 or list(max_dets) != sorted(max_dets)):
    raise ValueError(f'tasks/instance/coco_eval.py: max_dets is {list(max_dets)}; expected three '
                     'increasing limits, e.g. [1, 100, 400] (COCOeval.summarize reads three).')
  coco_gt = _load_ground_truth(annotations)
  metrics, summaries, per_category = {}, {}, {}
  for iou_type in iou_types:
    if iou_type not in ('bbox', 'segm'):
      raise ValueError(f"tasks/instance/coco_eval.py: iou_types has {iou_type!r}; expected 'bbox' "
                       "or 'segm'.")
    if iou_type == 'segm' and results and 'segmentation' not in results[0]:
      raise ValueError("tasks/instance/coco_eval.py: iou_types has 'segm' but the results have no "
                       "'segmentation' (no masks given): pass iou_types=('bbox',).")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      coco_eval = COCOeval(coco_gt, _load_results(coco_gt, results, iou_type), iou_type)
      if image_ids is not None:
        coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
      if max_dets is not None:
        coco_eval.params.maxDets = [int(m) for m in max_dets]
      coco_eval.evaluate()
      coco_eval.accumulate()
      summary = io.StringIO()
      with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
        if max_dets is not None and max_dets[-1] != 100:
          # summarize() takes AP@[.5:.95] at 100 detections whatever maxDets says; every
          # other AP uses the last limit. Recompute it there, as COCOeval would print it.
          precision = coco_eval.eval['precision'][:, :, :, 0, -1]
          coco_eval.stats[0] = precision[precision > -1].mean() if (precision > -1).any() else -1
          print(f' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | '
                f'maxDets={max_dets[-1]:>3d} ] = {coco_eval.stats[0]:0.3f}  (AP above)')
    metrics[iou_type] = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}
    summaries[iou_type] = summary.getvalue()
    per_category[iou_type] = per_category_ap(coco_eval)
  return CocoReport(metrics, summaries, per_category)


def evaluate(annotations: str | os.PathLike | COCO, results: list[dict],
             iou_types: Sequence[str] = ('bbox', 'segm'),
             image_ids: Sequence[int] | None = None,
             max_dets: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
  """iou type -> {'AP', 'AP50', ..., 'ARl'}: `evaluate_report(...).metrics`."""
  return evaluate_report(annotations, results, iou_types, image_ids, max_dets).metrics


def format_table(metrics: Mapping[str, Mapping[str, float]],
                 columns: Sequence[str] = TABLE_COLUMNS) -> str:
  """Markdown table: one row per iou type, AP columns in percent (-1: no such objects)."""
  def cell(value: float) -> str:
    return 'n/a' if value < 0 else f'{100 * value:.1f}'
  lines = ['| | ' + ' | '.join(columns) + ' |', '|---' * (len(columns) + 1) + '|']
  for iou_type, stats in metrics.items():
    lines.append(f'| {iou_type} | ' + ' | '.join(cell(stats[c]) for c in columns) + ' |')
  return '\n'.join(lines)
