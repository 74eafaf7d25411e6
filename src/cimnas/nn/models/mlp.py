"""Multi-layer perceptron on flattened images (UAE MLP-ReLU / MLP-Sigmoid).

    x (N, C, H, W) -> flatten (N, C*H*W)
    -> [FC(h_i) -> (BN) -> act] for each hidden size -> FC(num_classes)

`hidden_sizes` are the 1x widths (the searchable layers); `activation` is relu | sigmoid |
tanh; `bn=True` adds BatchNorm1d after each hidden FC (useful for the binary form).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.layers import QLinear, SlimmableBatchNorm1d
from cimnas.nn.models._common import MODELS, WidthSearchable, check_widths, image_hw, set_active
from cimnas.nn.models.lenet import make_activation


class MLP(WidthSearchable):
    """Fully connected network; one searchable width per hidden layer, output fixed."""

    def __init__(self, in_channels: int, num_classes: int, image_size, widths: list[int] | None = None,
                 hidden_sizes: Sequence[int] = (256, 256), activation: str = "relu", bn: bool = False):
        super().__init__()
        base = check_widths("mlp", hidden_sizes, len(hidden_sizes), "hidden layer") if hidden_sizes else []
        if not base:
            raise CimnasError("mlp needs at least one hidden size, e.g. hidden_sizes=[256, 256]")
        widths = base if widths is None else check_widths("mlp", widths, len(base), "hidden layer")
        self._init_widths("mlp", base, widths)
        h, w = image_hw(image_size)
        f_in = in_channels * h * w
        self.fcs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.acts = nn.ModuleList()
        for width in widths:
            self.fcs.append(QLinear(f_in, width))
            self.bns.append(SlimmableBatchNorm1d(width) if bn else nn.Identity())
            self.acts.append(make_activation(activation))
            f_in = width
        self.fcs.append(QLinear(f_in, num_classes))
        self.has_bn = bool(bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)  # (N, C*H*W)
        for fc, bn, act in zip(self.fcs[:-1], self.bns, self.acts, strict=True):
            x = act(bn(fc(x)))  # (N, h_i)
        return self.fcs[-1](x)  # (N, num_classes)

    def _apply_widths(self, widths: list[int]) -> None:
        prev = None
        for fc, width in zip(self.fcs[:-1], widths, strict=True):
            set_active(fc, prev, width)
            prev = width
        set_active(self.fcs[-1], prev, None)

    def searchable_layer_names(self) -> list[str]:
        return [f"fcs.{i}" for i in range(len(self.fcs) - 1)]

    def fusion_pairs(self) -> list[tuple[str, str]]:
        if not self.has_bn:
            return []
        return [(f"bns.{i}", f"fcs.{i + 1}") for i in range(len(self.bns))]


@MODELS.register("mlp", "MLP on flattened input; hidden_sizes list, activation relu|sigmoid|tanh")
def build_mlp(*, in_channels: int, num_classes: int, image_size, widths=None,
              hidden_sizes: Sequence[int] = (256, 256), activation: str = "relu", bn: bool = False) -> MLP:
    """MLP; widths override hidden_sizes (same length)."""
    return MLP(in_channels, num_classes, image_size, widths, hidden_sizes=list(hidden_sizes),
               activation=activation, bn=bn)
