"""CIFAR-style ResNet-20/32/56/110 (He et al. 2016, Sec. 4.2) with option-A (default) or B shortcuts.

    x (N, C, H, W)
    -> conv3x3(w0) -> BN -> ReLU                                   stem, (N, w0, H, W)
    -> 3 stages x n basic blocks (n = (depth - 2) / 6), 16/32/64 base widths,
       the first block of stages 2 and 3 has stride 2               (N, c, H/4, W/4)
    -> global avg-pool -> flatten -> FC(num_classes)

Basic block: out = BN(conv(ReLU(BN(conv(x))))) + shortcut(x), then ReLU. The shortcut is
option A: stride subsample and `match_channels` (zero-pad or truncate), so residual adds of any
width pair need no parameters and, once binarized, no floating-point multiplications. With
`shortcut="B"` the two down-sampling blocks use a 1x1 stride-2 conv + BN shortcut instead (He et al.
option B; MNSIM-2.0's ResNet-20), sliced like the block's conv2 (input = stream width, output = c2).

The width vector has one entry per conv (ResNet-20: 1 + 18 = 19); the FC output is fixed.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear, SlimmableBatchNorm2d, match_channels
from cimnas.nn.models._common import (
    MODELS,
    WidthSearchable,
    check_widths,
    image_hw,
    init_weights,
    residual_stages,
    set_active,
    traced_shape,
)


class BasicBlock(nn.Module):
    """3x3 conv - BN - act - 3x3 conv - BN, plus an option-A shortcut (or, with `conv_shortcut` on a
    down-sampling block, a 1x1 conv + BN: option B, the ImageNet ResNet-18 block), then act."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int, conv_shortcut: bool = False):
        super().__init__()
        self.stride = int(stride)
        self.conv1 = QConv2d(c_in, c_mid, 3, stride=stride)
        self.bn1 = SlimmableBatchNorm2d(c_mid)
        self.act1 = nn.ReLU()
        self.conv2 = QConv2d(c_mid, c_out, 3)
        self.bn2 = SlimmableBatchNorm2d(c_out)
        self.act2 = nn.ReLU()
        self.has_conv_shortcut = bool(conv_shortcut) and stride > 1
        if self.has_conv_shortcut:
            self.shortcut_conv = QConv2d(c_in, c_out, 1, stride=stride, padding=0)
            self.shortcut_bn = SlimmableBatchNorm2d(c_out)

    def shortcut(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """Option A: subsample spatially, zero-pad / truncate channels (no float ops); option B: 1x1 conv."""
        if self.has_conv_shortcut:
            return self.shortcut_bn(self.shortcut_conv(x))  # (N, c_out, H/s, W/s)
        sc = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        return match_channels(sc, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))  # (N, c_mid, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (N, c_out, H/s, W/s)
        return self.act2(out + self.shortcut(x, out.shape[1]))


class CifarResNet(WidthSearchable):
    """ResNet-(6n+2) for small images with per-conv widths (HAWIS ResNet-20/32 backbone)."""

    def __init__(self, depth: int, in_channels: int, num_classes: int, image_size,
                 widths: list[int] | None = None, shortcut: str = "A"):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise CimnasError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 conv), got {shortcut!r}")
        self.shortcut_type = shortcut
        n = (depth - 2) // 6
        base = [16] + [16] * (2 * n) + [32] * (2 * n) + [64] * (2 * n)
        name = f"resnet{depth}"
        widths = base if widths is None else check_widths(name, widths, len(base), "conv layer")
        self._init_widths(name, base, widths)
        h, w = image_hw(image_size)

        self.conv1 = QConv2d(in_channels, widths[0], 3)
        self.bn1 = SlimmableBatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        block = partial(BasicBlock, conv_shortcut=shortcut == "B")
        self.blocks, block_convs = residual_stages(block, widths, stages=3, per_stage=n)
        self._convs = ["conv1"] + block_convs
        self.pool = nn.AdaptiveAvgPool2d(1)
        feat = traced_shape(self._features, (in_channels, h, w))
        self.fc = QLinear(feat[0] * feat[1] * feat[2], num_classes)
        init_weights(self)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (N, w0, H, W)
        x = self.blocks(x)  # (N, c_last, H/4, W/4)
        return self.pool(x)  # (N, c_last, 1, 1); Identity after topology modification

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self._features(x), 1))

    def _apply_widths(self, widths: list[int]) -> None:
        set_active(self.conv1, None, widths[0])
        stream = widths[0]
        for k in range(len(self.blocks)):
            c1, c2 = widths[1 + 2 * k], widths[2 + 2 * k]
            set_active(self._layer(f"blocks.{k}.conv1"), stream, c1)
            set_active(self._layer(f"blocks.{k}.conv2"), c1, c2)
            if self.blocks[k].has_conv_shortcut:
                set_active(self._layer(f"blocks.{k}.shortcut_conv"), stream, c2)
            stream = c2
        spatial = self._fc_spatial("fc", self._built_widths[-1])
        set_active(self.fc, stream * spatial, None)

    def searchable_layer_names(self) -> list[str]:
        return list(self._convs)

    def fusion_pairs(self) -> list[tuple[str, str]]:
        # bn1 of each block feeds only conv2; the stem BN and bn2 feed residual adds.
        return [(f"blocks.{k}.bn1", f"blocks.{k}.conv2") for k in range(len(self.blocks))]


def _register(depth: int) -> None:
    def build(*, in_channels: int, num_classes: int, image_size, widths=None, shortcut: str = "A") -> CifarResNet:
        return CifarResNet(depth, in_channels, num_classes, image_size, widths, shortcut)

    build.__name__ = f"resnet{depth}"
    n_conv = 1 + 6 * ((depth - 2) // 6)
    MODELS.register(f"resnet{depth}", f"CIFAR ResNet-{depth}, option-A (or shortcut=B) shortcuts, "
                                      f"{n_conv} per-conv widths (base 16/32/64)")(build)


for _depth in (20, 32, 56, 110):
    _register(_depth)
