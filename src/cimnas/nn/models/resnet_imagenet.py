"""ImageNet ResNet-18 (He et al. 2016) with per-conv widths and the HAWIS stem option.

    stem "standard": conv7x7/2(w0) -> BN -> ReLU -> maxpool3x3/2          (N, w0, H/4, W/4)
    stem "hawis":    conv7x7/2(96, fixed) -> BN -> ReLU
                     -> conv3x3(w0, searchable) -> BN -> ReLU -> maxpool3x3/2 (paper Sec. IV)
    -> 4 stages x 2 basic blocks, 64/128/256/512 base widths, stride 2 at stages 2-4
    -> global avg-pool -> flatten -> FC(num_classes)

Downsampling blocks use a 1x1 conv + BN shortcut (binarized like every conv after refactor);
other blocks use `match_channels` (option A) when widths differ. The width vector has 17
entries: the searchable stem conv (w0) and the 16 block convs. `stem="auto"` picks "hawis" for
precision="binary" and "standard" otherwise. Re-factorization removes the max-pool and doubles
the stride of the conv before it (the extra 3x3 conv with the HAWIS stem).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear, SlimmableBatchNorm2d
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
from cimnas.nn.models.resnet_cifar import BasicBlock

BASE_WIDTHS_18 = [64] + [64] * 4 + [128] * 4 + [256] * 4 + [512] * 4
# ImageNet basic block: 1x1 conv + BN shortcut when it downsamples, option A otherwise
BasicBlockB = partial(BasicBlock, conv_shortcut=True)


class ImageNetResNet18(WidthSearchable):
    """ResNet-18 with 17 searchable widths; HAWIS stem = fixed 96-ch 7x7 conv + searchable 3x3."""

    def __init__(self, in_channels: int, num_classes: int, image_size, widths: list[int] | None = None,
                 stem: str = "standard", stem_channels: int = 96):
        super().__init__()
        if stem not in ("standard", "hawis"):
            raise CimnasError(f"resnet18 stem must be 'standard', 'hawis' or 'auto', got {stem!r}")
        if int(stem_channels) < 1:
            raise CimnasError(f"resnet18 stem_channels must be positive, got {stem_channels}")
        widths = BASE_WIDTHS_18 if widths is None else check_widths(
            "resnet18", widths, len(BASE_WIDTHS_18), "searchable stem conv and block conv")
        self._init_widths("resnet18", BASE_WIDTHS_18, widths)
        self.stem = stem
        h, w = image_hw(image_size)

        if stem == "hawis":
            self.conv1 = QConv2d(in_channels, int(stem_channels), 7, stride=2, padding=3)
            self.bn1 = SlimmableBatchNorm2d(int(stem_channels))
            self.act1 = nn.ReLU()
            self.conv_extra = QConv2d(int(stem_channels), widths[0], 3)
            self.bn_extra = SlimmableBatchNorm2d(widths[0])
            self.act_extra = nn.ReLU()
            self._convs = ["conv_extra"]
        else:
            self.conv1 = QConv2d(in_channels, widths[0], 7, stride=2, padding=3)
            self.bn1 = SlimmableBatchNorm2d(widths[0])
            self.act1 = nn.ReLU()
            self._convs = ["conv1"]
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.blocks, block_convs = residual_stages(BasicBlockB, widths, stages=4, per_stage=2)
        self._convs += block_convs
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        feat = traced_shape(self._features, (in_channels, h, w))
        self.fc = QLinear(feat[0] * feat[1] * feat[2], num_classes)
        init_weights(self)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (N, w0 or 96, H/2, W/2)
        if self.stem == "hawis":
            x = self.act_extra(self.bn_extra(self.conv_extra(x)))  # (N, w0, H/2, W/2)
        x = self.maxpool(x)  # (N, w0, H/4, W/4)
        x = self.blocks(x)  # (N, c_last, H/32, W/32)
        return self.avgpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self._features(x), 1))

    def _apply_widths(self, widths: list[int]) -> None:
        if self.stem == "hawis":
            set_active(self.conv_extra, None, widths[0])
        else:
            set_active(self.conv1, None, widths[0])
        stream = widths[0]
        for k, blk in enumerate(self.blocks):
            c1, c2 = widths[1 + 2 * k], widths[2 + 2 * k]
            set_active(self._layer(f"blocks.{k}.conv1"), stream, c1)
            set_active(self._layer(f"blocks.{k}.conv2"), c1, c2)
            if blk.has_conv_shortcut:
                set_active(self._layer(f"blocks.{k}.shortcut_conv"), stream, c2)
            stream = c2
        set_active(self.fc, stream * self._fc_spatial("fc", self._built_widths[-1]), None)

    def searchable_layer_names(self) -> list[str]:
        return list(self._convs)

    def fusion_pairs(self) -> list[tuple[str, str]]:
        pairs = [("bn1", "conv_extra")] if self.stem == "hawis" else []
        return pairs + [(f"blocks.{k}.bn1", f"blocks.{k}.conv2") for k in range(len(self.blocks))]


@MODELS.register("resnet18", "ImageNet ResNet-18, 17 searchable widths; stem standard|hawis (96-ch 7x7 + 3x3)")
def build_resnet18(*, in_channels: int, num_classes: int, image_size, widths=None, precision: str = "float",
                   stem: str = "auto", stem_channels: int = 96) -> ImageNetResNet18:
    """ResNet-18; `stem="auto"` -> "hawis" for binary precision, else "standard"."""
    if stem == "auto":
        stem = "hawis" if precision == "binary" else "standard"
    return ImageNetResNet18(in_channels, num_classes, image_size, widths, stem=stem, stem_channels=stem_channels)
