"""Tiny plain-PyTorch CNNs with a width argument per coupled group, for the channel-group tests.

Each factory takes the width of every group it has, so a "freshly built narrow model" is the same factory
called with smaller widths; `GROUPS` holds the groups derived by hand (producer names, first = the group's
name) in forward order, the classifier's group left out (it keeps its width).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out))


class ResNetLike(nn.Module):
    """stem -> basic block (identity shortcut) -> down-sampling block (1x1 conv shortcut) -> pool -> fc.
    Groups: {stem, b1.conv2} (identity add), {b1.conv1}, {b2.conv1}, {b2.conv2, b2.shortcut} (add)."""

    def __init__(self, a: int = 8, b: int = 8, c: int = 12, d: int = 16, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(1, a)
        self.b1 = nn.ModuleDict({"conv1": conv_bn(a, b), "conv2": conv_bn(b, a)})
        self.b2 = nn.ModuleDict({"conv1": conv_bn(a, c, stride=2), "conv2": conv_bn(c, d),
                                 "shortcut": conv_bn(a, d, k=1, stride=2)})
        self.fc = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.b1["conv2"](torch.relu(self.b1["conv1"](x))))
        y = self.b2["conv2"](torch.relu(self.b2["conv1"](x)))
        x = torch.relu(y + self.b2["shortcut"](x))
        return self.fc(x.mean((2, 3)))


class InvertedResidual(nn.Module):
    """MobileNetV2-like: stem -> expand 1x1 -> depthwise 3x3 -> project 1x1 (+ input) -> 1x1 head -> pool -> fc.
    Groups: {stem, project} (residual add), {expand} with the depthwise conv, {head}."""

    def __init__(self, a: int = 8, e: int = 24, h: int = 16, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(1, a)
        self.expand = conv_bn(a, e, k=1)
        self.dw = conv_bn(e, e, groups=e)
        self.project = conv_bn(e, a, k=1)
        self.head = conv_bn(a, h, k=1)
        self.fc = nn.Linear(h, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.stem(x))
        y = nn.functional.relu6(self.dw(nn.functional.relu6(self.expand(x))))
        x = x + self.project(y)
        return self.fc(nn.functional.relu6(self.head(x)).mean((2, 3)))


class ConcatNet(nn.Module):
    """Two branches concatenated, batch-normed, read by a 1x1 conv, flattened into a hidden Linear, then the
    classifier. Groups: {a}, {b}, {mix}, {hidden}; norm and mix read [a's channels, b's channels] (offset),
    hidden reads mix's channels times H*W (flatten)."""

    def __init__(self, a: int = 8, b: int = 12, m: int = 8, hidden: int = 16, classes: int = 10, size: int = 8):
        super().__init__()
        self.a = conv_bn(1, a)
        self.b = conv_bn(1, b, k=1)
        self.norm = nn.BatchNorm2d(a + b)  # after the concatenation (DenseNet style)
        self.mix = conv_bn(a + b, m, k=1, stride=2)
        self.hidden = nn.Linear(m * (size // 2) ** 2, hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(torch.cat([self.a(x), self.b(x)], 1)))
        y = torch.relu(self.mix(y))
        return self.fc(torch.relu(self.hidden(torch.flatten(y, 1))))


GROUPS = {
    ResNetLike: [("stem.0", "b1.conv2.0"), ("b1.conv1.0",), ("b2.conv1.0",), ("b2.conv2.0", "b2.shortcut.0")],
    InvertedResidual: [("stem.0", "project.0"), ("expand.0",), ("head.0",)],
    ConcatNet: [("a.0",), ("b.0",), ("mix.0",), ("hidden",)],
}
