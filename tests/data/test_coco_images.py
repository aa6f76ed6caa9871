"""Bad image files in a COCO folder are named, with their image id, when the source is
built (before any training), and decode errors in the pipeline name them too."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import coco_images, shapes
from data.sources import build_source

SIZE = (32, 32)


def _folder(tmp_path, jpeg=False):
  """3 shapes images as COCO; image 1 saved as JPEG when `jpeg`. Returns its path."""
  shapes.write_coco(str(tmp_path), 3, image_size=SIZE)
  path = os.path.join(tmp_path, 'images', 'train', '00001.png')
  if jpeg:
    json_path = os.path.join(tmp_path, 'annotations', 'instances_train.json')
    with open(json_path) as f:
      data = json.load(f)
    with Image.open(path) as image:
      image.save(path[:-4] + '.jpg', quality=95)
    os.remove(path)
    data['images'][1]['file_name'] = '00001.jpg'
    with open(json_path, 'w') as f:
      json.dump(data, f)
    path = path[:-4] + '.jpg'
  return path


def _build(tmp_path, **kwargs):
  return build_source({'source': 'coco_json', 'data_dir': str(tmp_path), 'image_size': SIZE,
                       'max_instances': 8, **kwargs}, 'train')


def _truncate(path, keep=0.6):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:int(len(data) * keep)])


@pytest.mark.parametrize('jpeg', [False, True])
def test_truncated_image_is_named_when_the_source_is_built(tmp_path, jpeg):
  path = _folder(tmp_path, jpeg)
  _truncate(path)
  kind = 'JPEG' if jpeg else 'PNG'
  with pytest.raises(coco_images.CocoImageError, match=re.escape(
      f'{path} (image id 1): the {kind} file is truncated or corrupt (OSError: image file is '
      'truncated')):
    _build(tmp_path)


@pytest.mark.parametrize('content', [b'', b'<html>not found</html>\n'])
def test_a_file_that_is_no_image_is_named(tmp_path, content):
  path = _folder(tmp_path)
  with open(path, 'wb') as f:
    f.write(content)
  with pytest.raises(coco_images.CocoImageError, match=re.escape(
      f'{path} (image id 1): not an image')):
    _build(tmp_path)


def test_a_size_other_than_the_json_says_is_named(tmp_path):
  path = _folder(tmp_path)
  Image.new('RGB', (30, 32)).save(path)
  with pytest.raises(coco_images.CocoImageError, match=re.escape(
      f'{path} (image id 1): the file is 32 x 30 (h x w), but ')):
    _build(tmp_path)


def test_bytes_after_the_jpeg_end_marker_are_accepted(tmp_path):
  path = _folder(tmp_path, jpeg=True)
  with open(path, 'ab') as f:
    f.write(b'camera maker notes' + b'\x00' * 7)
  examples = list(_build(tmp_path).dataset.as_numpy_iterator())
  assert len(examples) == 3 and examples[1]['image'].any()


def test_decode_errors_in_the_pipeline_name_the_file_and_image_id(tmp_path):
  path = _folder(tmp_path)
  _truncate(path)
  source = _build(tmp_path, check_files=False)  # the check skipped: fails while reading
  with pytest.raises(tf.errors.OpError, match=re.escape(
      f'CocoImageError: {path} (image id 1): cannot decode the image (OSError: image file is '
      'truncated')):
    list(source.dataset.as_numpy_iterator())


def test_complete_files_pass_and_the_ends_are_recognised(tmp_path):
  path = _folder(tmp_path, jpeg=True)
  coco_images.check_image_file(path, {'id': 1, 'height': 32, 'width': 32}, 'x.json')
  with open(path, 'rb') as f:
    assert f.read().endswith(coco_images.JPEG_END)
  png = os.path.join(tmp_path, 'images', 'train', '00000.png')
  with open(png, 'rb') as f:
    assert f.read().endswith(coco_images.PNG_END)
  pixels = coco_images.load_image(png, 0)
  assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
