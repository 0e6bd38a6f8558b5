"""DenseNet-121 (Huang et al., CVPR 2017) in plain torch, with torchvision's parameter names.

The names matter more than the code: every published CheXNet checkpoint is a torchvision DenseNet-121, so a
module whose ``state_dict`` keys and shapes are exactly torchvision's loads those weights with
``strict=True`` and nothing in between (``inference.models.chexnet`` turns older layouts into these names).

``features(x)`` returns the output of the last batch norm (``features.norm5``), *before* the final ReLU, as
torchvision's does. ``forward(x)`` is ``classifier(mean_hw(relu(features(x))))`` and returns logits, so a
class activation map is ``classifier.weight @ relu(features(x))`` (plus the bias, if wanted), exactly the
same linear map the logits come from, applied before pooling instead of after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROWTH_RATE = 32
BN_SIZE = 4  # the bottleneck 1x1 convolution widens to BN_SIZE * GROWTH_RATE channels
BLOCK_LAYERS = (6, 12, 24, 16)
STEM_CHANNELS = 64
FEATURE_CHANNELS = 1024


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1-BN-ReLU-Conv3x3, adding GROWTH_RATE new channels to everything before it."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        width = BN_SIZE * GROWTH_RATE
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, GROWTH_RATE, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class _DenseBlock(nn.ModuleDict):
    """Each layer sees the concatenation of the block input and every earlier layer's output."""

    def __init__(self, num_layers: int, in_channels: int) -> None:
        super().__init__()
        for index in range(num_layers):
            self[f"denselayer{index + 1}"] = _DenseLayer(in_channels + index * GROWTH_RATE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat((x, layer(x)), dim=1)
        return x


class _Transition(nn.Sequential):
    """Halves the channels (1x1 convolution) and the resolution (2x2 average pooling) between blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def _features() -> nn.Sequential:
    layers: dict[str, nn.Module] = {
        "conv0": nn.Conv2d(3, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False),
        "norm0": nn.BatchNorm2d(STEM_CHANNELS),
        "relu0": nn.ReLU(inplace=True),
        "pool0": nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    }
    channels = STEM_CHANNELS
    for index, num_layers in enumerate(BLOCK_LAYERS, start=1):
        layers[f"denseblock{index}"] = _DenseBlock(num_layers, channels)
        channels += num_layers * GROWTH_RATE
        if index < len(BLOCK_LAYERS):
            layers[f"transition{index}"] = _Transition(channels, channels // 2)
            channels //= 2
    layers["norm5"] = nn.BatchNorm2d(channels)
    assert channels == FEATURE_CHANNELS
    sequential = nn.Sequential()
    for name, layer in layers.items():
        sequential.add_module(name, layer)
    return sequential


class DenseNet121(nn.Module):
    """DenseNet-121 returning (B, num_classes) logits; the runtime applies the sigmoid.

    Works with any input of at least 32x32 pixels (global average pooling, not a fixed 7x7 pool), in
    channels_last memory format and under ``torch.autocast``.
    """

    def __init__(self, num_classes: int = 14) -> None:
        super().__init__()
        self.features = _features()
        self.classifier = nn.Linear(FEATURE_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.features(x)).mean(dim=(2, 3))
        return self.classifier(pooled)
