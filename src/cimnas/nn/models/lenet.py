"""LeNet-5 (LeCun et al. 1998) with BatchNorm, for any input size and channel count.

    x (N, C, H, W)
    -> conv5x5(w0, pad 2) -> BN -> act -> maxpool2   (N, w0, H/2, W/2)
    -> conv5x5(w1, pad 2) -> BN -> act -> maxpool2   (N, w1, H/4, W/4)
    -> flatten -> FC(w2) -> BN -> act -> FC(w3) -> BN -> act -> FC(num_classes)

Base widths [6, 16, 120, 84]; "same" padding on both convs so 8x8 digits work as well as
28x28 and 32x32 (the flattened size is traced, not hard-coded). BN after every hidden layer
(`bn=False` drops it) so the re-factorized binary form can fold BN + binarization into
comparators (cimnas.nn.fusion).
"""

from __future__ import annotations

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear, SlimmableBatchNorm1d, SlimmableBatchNorm2d
from cimnas.nn.models._common import (
    MODELS,
    WidthSearchable,
    check_widths,
    image_hw,
    init_weights,
    set_active,
    traced_shape,
)

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise CimnasError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class LeNet5(WidthSearchable):
    """LeNet-5 with 4 searchable widths (2 convs, 2 hidden FCs); the last FC is fixed."""

    def __init__(self, in_channels: int, num_classes: int, image_size, widths: list[int] | None = None,
                 activation: str = "relu", bn: bool = True):
        super().__init__()
        base = [6, 16, 120, 84]
        widths = base if widths is None else check_widths("lenet5", widths, 4, "conv/hidden FC layer")
        self._init_widths("lenet5", base, widths)
        h, w = image_hw(image_size)

        def norm(c: int, dim: int) -> nn.Module:
            if not bn:
                return nn.Identity()
            return SlimmableBatchNorm2d(c) if dim == 2 else SlimmableBatchNorm1d(c)

        self.conv1 = QConv2d(in_channels, widths[0], 5, padding=2)
        self.bn1, self.act1, self.pool1 = norm(widths[0], 2), make_activation(activation), nn.MaxPool2d(2)
        self.conv2 = QConv2d(widths[0], widths[1], 5, padding=2)
        self.bn2, self.act2, self.pool2 = norm(widths[1], 2), make_activation(activation), nn.MaxPool2d(2)
        feat = traced_shape(self._features, (in_channels, h, w))
        self.fc1 = QLinear(feat[0] * feat[1] * feat[2], widths[2])
        self.bn3, self.act3 = norm(widths[2], 1), make_activation(activation)
        self.fc2 = QLinear(widths[2], widths[3])
        self.bn4, self.act4 = norm(widths[3], 1), make_activation(activation)
        self.fc3 = QLinear(widths[3], num_classes)
        self.has_bn = bool(bn)
        init_weights(self)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))  # (N, w0, H/2, W/2)
        return self.pool2(self.act2(self.bn2(self.conv2(x))))  # (N, w1, H/4, W/4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self._features(x), 1)
        x = self.act3(self.bn3(self.fc1(x)))
        x = self.act4(self.bn4(self.fc2(x)))
        return self.fc3(x)

    def _apply_widths(self, widths: list[int]) -> None:
        set_active(self.conv1, None, widths[0])
        set_active(self.conv2, widths[0], widths[1])
        set_active(self.fc1, widths[1] * self._fc_spatial("fc1", self._built_widths[1]), widths[2])
        set_active(self.fc2, widths[2], widths[3])
        set_active(self.fc3, widths[3], None)

    def searchable_layer_names(self) -> list[str]:
        return ["conv1", "conv2", "fc1", "fc2"]

    def fusion_pairs(self) -> list[tuple[str, str]]:
        if not self.has_bn:
            return []
        return [("bn1", "conv2"), ("bn2", "fc1"), ("bn3", "fc2"), ("bn4", "fc3")]


@MODELS.register("lenet5", "LeNet-5 with BN: conv-act-maxpool x2, FC 120, FC 84, FC classes")
def build_lenet5(*, in_channels: int, num_classes: int, image_size, widths=None, activation: str = "relu",
                 bn: bool = True) -> LeNet5:
    """LeNet-5; widths [conv1, conv2, fc1, fc2] (base [6, 16, 120, 84])."""
    return LeNet5(in_channels, num_classes, image_size, widths, activation=activation, bn=bn)
