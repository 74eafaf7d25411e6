"""Super-net overhead: a training step of a sub-net sliced from the super-net vs the same widths
built as a standalone model (goal <= 1.1). Binarized ResNet-20, 16x16 inputs, batch 64, CPU/GPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import ratio

from cimnas.nn.supernet import SuperNet


def run() -> dict:
    torch.manual_seed(0)
    net = SuperNet.build("resnet20", in_channels=3, num_classes=10, image_size=16, r_min=1.0, r_max=3.0, d=4)
    widths = list(net.space.sample_nonuniform(torch.Generator().manual_seed(0)).widths)
    sub = net.extract_subnet(widths)
    x, y = torch.rand(64, 3, 16, 16), torch.randint(0, 10, (64,))
    opt_super = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    opt_sub = torch.optim.SGD(sub.parameters(), lr=0.01, momentum=0.9)
    net.train()
    sub.train()

    def step_super() -> None:
        net.slimmable_step(x, y, [widths], opt_super)

    def step_sub() -> None:
        opt_sub.zero_grad(set_to_none=True)
        F.cross_entropy(sub(x), y).backward()
        opt_sub.step()

    return {"subnet_vs_standalone": ratio(step_super, step_sub, repeats=5, rounds=3)}
