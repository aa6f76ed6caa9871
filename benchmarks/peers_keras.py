"""The benchmark's models written in Keras 3 (channels-last, like ours).

Same widths, BatchNorm momentum 0.9 and epsilon 1e-5 (Keras's default epsilon is
1e-3), dropout, `lecun_normal` kernels (Flax's default initialiser), zero biases,
ResNet blocks' last BatchNorm scale zero.
"""
from __future__ import annotations

import keras
from keras import layers

_INIT = 'lecun_normal'


def _bn(**kwargs) -> layers.Layer:
  return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)


def mlp(input_shape=(28, 28, 1), hidden_widths=(512, 256), num_classes=10,
        dropout=0.2) -> keras.Model:
  inputs = keras.Input(input_shape)
  x = layers.Flatten()(inputs)
  for width in hidden_widths:
    x = layers.Dense(width, activation='relu', kernel_initializer=_INIT)(x)
    x = layers.Dropout(dropout)(x)
  return keras.Model(inputs, layers.Dense(num_classes, kernel_initializer=_INIT)(x))


def cnn(input_shape=(28, 28, 1), widths=(32, 64), dense_width=256, num_classes=10,
        dropout=0.3) -> keras.Model:
  inputs = keras.Input(input_shape)
  x = inputs
  for width in widths:
    x = layers.Conv2D(width, 3, padding='same', use_bias=False, kernel_initializer=_INIT)(x)
    x = layers.ReLU()(_bn()(x))
    x = layers.MaxPooling2D(2)(x)
  x = layers.Flatten()(x)
  x = layers.Dense(dense_width, activation='relu', kernel_initializer=_INIT)(x)
  x = layers.Dropout(dropout)(x)
  return keras.Model(inputs, layers.Dense(num_classes, kernel_initializer=_INIT)(x))


def _conv(width: int, kernel: int, stride: int) -> layers.Layer:
  return layers.Conv2D(width, kernel, strides=stride, padding='same', use_bias=False,
                       kernel_initializer=_INIT)


def resnet20(input_shape=(32, 32, 3), num_classes=10) -> keras.Model:
  inputs = keras.Input(input_shape)
  x = layers.ReLU()(_bn()(_conv(16, 3, 1)(inputs)))
  for stage, width in enumerate((16, 32, 64)):
    for b in range(3):
      stride = 2 if stage > 0 and b == 0 else 1
      y = layers.ReLU()(_bn()(_conv(width, 3, stride)(x)))
      y = _bn(gamma_initializer='zeros')(_conv(width, 3, 1)(y))
      if stride != 1 or x.shape[-1] != width:
        x = _bn()(_conv(width, 1, stride)(x))
      x = layers.ReLU()(layers.Add()([x, y]))
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, layers.Dense(num_classes, kernel_initializer=_INIT)(x))


def unet(input_shape=(128, 128, 3), num_classes=4, depth=3, base_width=16) -> keras.Model:
  """models/unet.py with norm='batch', upsample='transpose', max_width never reached."""
  def block(x, width):
    for _ in range(2):
      x = layers.Conv2D(width, 3, padding='same', use_bias=False, kernel_initializer=_INIT)(x)
      x = layers.ReLU()(_bn()(x))
    return x

  inputs = keras.Input(input_shape)
  x, skips = inputs, []
  for level in range(depth):
    x = block(x, base_width * 2**level)
    skips.append(x)
    x = layers.MaxPooling2D(2)(x)
  x = block(x, base_width * 2**depth)
  for level in reversed(range(depth)):
    width = base_width * 2**level
    x = layers.Conv2DTranspose(width, 2, strides=2, padding='same',
                               kernel_initializer=_INIT)(x)
    x = block(layers.Concatenate()([skips[level], x]), width)
  return keras.Model(inputs, layers.Conv2D(num_classes, 1, kernel_initializer=_INIT)(x))


def adamw(learning_rate: float, weight_decay: float) -> keras.optimizers.Optimizer:
  """AdamW with weight decay on kernels only (BatchNorm and biases excluded), as ours."""
  opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay,
                               beta_1=0.9, beta_2=0.999, epsilon=1e-8)
  opt.exclude_from_weight_decay(var_names=['bias', 'gamma', 'beta'])
  return opt
