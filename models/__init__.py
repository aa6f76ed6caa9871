"""Pure Flax linen models. Importing this package registers every model by name."""
from models import cnn, mlp, resnet, resnet50, unet  # noqa: F401  (registration side effect)
from models.mask_rcnn import model as mask_rcnn_model  # noqa: F401,E402
from models.registry import MODELS, build_model

__all__ = ['MODELS', 'build_model']
