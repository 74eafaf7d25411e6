"""A plain PyTorch CNN, written the way anyone writes one (nn.Conv2d / nn.Linear, BN, ReLU, a residual block, a
depthwise convolution), as the worked example of docs/your-network.md:

    cimnas energy --model-file examples/my_net.py:build --input-shape 1x8x8
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """x + BN(conv(ReLU(BN(conv(x))))), then ReLU (He et al. 2016, basic block)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(x + out)


def build(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The model factory: cimnas calls it with the dataset's classes and channels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),  # stem
        Residual(32),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),  # depthwise
        nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),  # pointwise
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, num_classes),
    )
