"""The benchmark's models written in PyTorch, matching models/ layer for layer.

Same widths, BatchNorm (momentum 0.9 in Flax's convention = 0.1 in PyTorch's, epsilon
1e-5), dropout, and initialisation: truncated-normal LeCun kernels (Flax's and Keras's
`lecun_normal`), zero biases, ResNet blocks' last BatchNorm scale zero. Layout is
PyTorch's native NCHW, so the flatten before the dense head orders features
differently from ours (the same function up to a permutation of Dense_0's rows).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _lecun_normal_(weight: torch.Tensor, transposed: bool = False) -> None:
  # A transposed conv's weight is [in, out, kh, kw]: its fan-in is in * kh * kw.
  fan_in = weight[:, 0].numel() if transposed else weight[0].numel()
  # Truncated at 2 std, rescaled so the variance is 1 / fan_in (as jax's variance_scaling).
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def _init(module: nn.Module) -> nn.Module:
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      _lecun_normal_(m.weight, isinstance(m, nn.ConvTranspose2d))
      if m.bias is not None:
        nn.init.zeros_(m.bias)
  return module


def _bn(width: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(width, eps=1e-5, momentum=0.1)


def mlp(hidden_widths=(512, 256), num_classes=10, in_features=784, dropout=0.2) -> nn.Module:
  layers: list[nn.Module] = [nn.Flatten()]
  for width in hidden_widths:
    layers += [nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(dropout)]
    in_features = width
  return _init(nn.Sequential(*layers, nn.Linear(in_features, num_classes)))


def cnn(widths=(32, 64), dense_width=256, num_classes=10, in_channels=1, size=28,
        dropout=0.3) -> nn.Module:
  layers: list[nn.Module] = []
  for width in widths:
    layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), _bn(width), nn.ReLU(),
               nn.MaxPool2d(2)]
    in_channels, size = width, size // 2
  layers += [nn.Flatten(), nn.Linear(in_channels * size * size, dense_width), nn.ReLU(),
             nn.Dropout(dropout), nn.Linear(dense_width, num_classes)]
  return _init(nn.Sequential(*layers))


class BasicBlock(nn.Module):
  def __init__(self, in_width: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_width, width, 3, stride, 1, bias=False)
    self.bn1 = _bn(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = _bn(width)
    self.project = None
    if stride != 1 or in_width != width:
      self.project = nn.Sequential(nn.Conv2d(in_width, width, 1, stride, bias=False), _bn(width))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu((x if self.project is None else self.project(x)) + y)


class ResNetCifar(nn.Module):
  def __init__(self, depth: int = 20, num_classes: int = 10):
    super().__init__()
    blocks = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU()]
    in_width = 16
    for stage, width in enumerate((16, 32, 64)):
      for b in range(blocks):
        layers.append(BasicBlock(in_width, width, 2 if stage > 0 and b == 0 else 1))
        in_width = width
    self.body = nn.Sequential(*layers)
    self.head = nn.Linear(in_width, num_classes)
    _init(self)
    for m in self.modules():
      if isinstance(m, BasicBlock):
        nn.init.zeros_(m.bn2.weight)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.body(x).mean(dim=(2, 3)))


def resnet20() -> nn.Module:
  return ResNetCifar(20)


def _unet_block(in_width: int, width: int) -> nn.Sequential:
  return nn.Sequential(nn.Conv2d(in_width, width, 3, padding=1, bias=False), _bn(width),
                       nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=False),
                       _bn(width), nn.ReLU())


class UNet(nn.Module):
  """models/unet.py with norm='batch', upsample='transpose'; input [B, C, H, W]."""

  def __init__(self, num_classes: int = 4, depth: int = 3, base_width: int = 16,
               in_channels: int = 3):
    super().__init__()
    widths = [base_width * 2**level for level in range(depth + 1)]
    self.down = nn.ModuleList()
    for level in range(depth):
      self.down.append(_unet_block(in_channels, widths[level]))
      in_channels = widths[level]
    self.bottleneck = _unet_block(widths[depth - 1], widths[depth])
    self.up = nn.ModuleList(nn.ConvTranspose2d(widths[l + 1], widths[l], 2, stride=2)
                            for l in reversed(range(depth)))
    self.up_blocks = nn.ModuleList(_unet_block(2 * widths[l], widths[l])
                                   for l in reversed(range(depth)))
    self.head = nn.Conv2d(widths[0], num_classes, 1)
    _init(self)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = nn.functional.max_pool2d(x, 2)
    x = self.bottleneck(x)
    for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
      x = block(torch.cat([skip, up(x)], dim=1))
    return self.head(x)


def unet() -> nn.Module:
  return UNet()


def adamw(model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
  """AdamW with weight decay on conv/dense kernels only, as train.optimizer does."""
  decay = [p for n, p in model.named_parameters() if p.ndim > 1]
  rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
  return torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                            {'params': rest, 'weight_decay': 0.0}],
                           lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)
