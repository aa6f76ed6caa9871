"""Every data format error is a UserError: the command line prints it as one `error:`
line naming the file, not a traceback (experiments/cli.py)."""
import importlib
import pkgutil

import data
from errors import UserError


def test_every_error_class_of_the_data_package_is_a_user_error():
  found = {}
  for info in pkgutil.iter_modules(data.__path__):
    module = importlib.import_module(f'data.{info.name}')
    for name, obj in vars(module).items():
      if (isinstance(obj, type) and issubclass(obj, Exception) and name.endswith('Error')
          and obj.__module__ == module.__name__):
        found[f'data.{info.name}.{name}'] = obj
  assert {'data.coco.CocoFormatError', 'data.seg_folder.SegFolderError',
          'data.coco_images.CocoImageError', 'data.idx.IdxFormatError'} <= set(found)
  assert [n for n, cls in found.items() if not issubclass(cls, UserError)] == []
