"""Binarization overhead (issue 2): training-step time of binarized layers / float layers.

binarize_overhead_conv:     a 3x3 conv, 64 -> 64 channels, 16x16 maps, batch 64: binary / float
binarize_overhead_resnet20: binarized ResNet-20 / float ResNet-20 (same widths, 3x32x32, batch 64)
Goal: <= 1.15 each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ratio  # noqa: E402

from cimnas.nn.layers import QConv2d  # noqa: E402
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight  # noqa: E402


def _step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out, y) if y is not None else out.square().mean()
        loss.backward()
        opt.step()

    return step


def run() -> dict:
    torch.manual_seed(0)
    x = torch.rand(64, 64, 16, 16)
    fconv = QConv2d(64, 64, 3)
    bconv = QConv2d(64, 64, 3, input_quantizer=BinaryActivation(), weight_quantizer=BinaryWeight())
    bconv.load_state_dict(fconv.state_dict())
    conv_ratio = ratio(_step_fn(bconv, x, None), _step_fn(fconv, x, None))

    from cimnas.nn.models import build_model

    kw = dict(in_channels=3, num_classes=10, image_size=32)
    fmodel = build_model("resnet20", precision="float", **kw)
    bmodel = build_model("resnet20", precision="binary", **kw)
    xi, yi = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))
    net_ratio = ratio(_step_fn(bmodel, xi, yi), _step_fn(fmodel, xi, yi), repeats=3, rounds=2)
    return {"binarize_overhead_conv": conv_ratio, "binarize_overhead_resnet20": net_ratio}


if __name__ == "__main__":
    print(run())
