"""A plain PyTorch CIFAR-style ResNet (He et al. 2016, Sec. 4.2), written with no cimnas imports: nn.Conv2d,
nn.BatchNorm2d, nn.ReLU modules, `out + shortcut` adds (identity, or a 1x1 conv + BN where the shape changes),
a global average pool and a classifier. docs/deploy.md trains it fully binarized with `cimnas train
--model-file examples/plain_resnet.py:resnet8 --set model.refactor=true` and measures its integer residual path.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, three stages of `n` basic blocks (widths w, 2w, 4w; stride 2 into stages 2 and 3), avg-pool, FC."""

    def __init__(self, n: int, width: int = 16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        blocks, c = [], width
        for stage in range(3):
            for k in range(n):
                c_out = width * 2**stage
                blocks.append(BasicBlock(c, c_out, 2 if stage > 0 and k == 0 else 1))
                c = c_out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def resnet8(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-8: one block per stage (7 convs, 2 of them 1x1 shortcuts, and the FC)."""
    return ResNet(1, 16, num_classes, in_channels)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-20: three blocks per stage."""
    return ResNet(3, 16, num_classes, in_channels)
