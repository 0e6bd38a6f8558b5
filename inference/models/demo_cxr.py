"""The platform's own demonstration chest X-ray network: a small residual CNN, trained by
``inference.training.demo_cxr`` on the 521 shared ChestX-ray14 images.

Small on purpose: it has to train on two CPU cores in minutes and its weights are committed to git. It keeps
the shape class activation maps need: ``features`` ends in the last convolutional map (before its ReLU),
global average pooling follows, and ``classifier`` is one ``nn.Linear``, so a heatmap is the classifier's
weights applied to the feature map.

The map is at 1/8 of the input (16x16 at 128 pixels), not at the last stage's 1/32: a 4x4 map washes half a
chest. The deep stage's meaning is carried down to 1/8 by a top-down pathway (a feature pyramid): each
shallower stage adds its own detail through a 1x1 lateral convolution to the upsampled deeper map.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def _conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut; the block's output is left before its ReLU.

    The next block (or the model's head) applies the ReLU, so the last block's output is the pre-activation
    map that ``features`` must expose for class activation maps.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels, stride)
        self.conv2 = _conv_bn(out_channels, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.relu(x)
        return self.conv2(functional.relu(self.conv1(x))) + self.shortcut(x)


def _lateral(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class PyramidFeatures(nn.Module):
    """(B, in_channels, S, S) images to a (B, 8 * width, S/8, S/8) map, left before its ReLU.

    The stages halve the size four times after the stem (/4, /8, /16, /32). The /32 map is upsampled and added
    to the /16 stage's lateral, and that sum upsampled and added to the /8 stage's lateral.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2, bias=False),  # /2
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),  # /4
        )
        self.stage1 = ResidualBlock(width, width, stride=1)
        self.stage2 = ResidualBlock(width, 2 * width, stride=2)  # /8
        self.stage3 = ResidualBlock(2 * width, 4 * width, stride=2)  # /16
        self.stage4 = ResidualBlock(4 * width, 8 * width, stride=2)  # /32
        self.lateral3 = _lateral(4 * width, 8 * width)
        self.lateral2 = _lateral(2 * width, 8 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eighth = self.stage2(self.stage1(self.stem(x)))
        sixteenth = self.stage3(eighth)
        deepest = self.stage4(sixteenth)
        merged = self.lateral3(functional.relu(sixteenth)) + _upsampled(deepest, sixteenth)
        return self.lateral2(functional.relu(eighth)) + _upsampled(merged, eighth)


def _upsampled(deeper: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return functional.interpolate(deeper, size=like.shape[-2:], mode="bilinear", align_corners=False)


class DemoCXRNet(nn.Module):
    """(B, in_channels, S, S) normalised images to (B, n_outputs) logits; S a multiple of 32 is tidiest.

    ``width`` is the channel count of the first stage; each later stage doubles it, and the feature map has
    ``8 * width`` channels at 1/8 of the input size.
    """

    def __init__(self, n_outputs: int, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = PyramidFeatures(in_channels, width)
        self.classifier = nn.Linear(8 * width, n_outputs)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The globally pooled feature vector the classifier reads (training heads may read it too)."""
        return functional.adaptive_avg_pool2d(functional.relu(self.features(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))
