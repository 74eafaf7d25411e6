"""Tiny models and helpers shared by the deploy tests (random weights, BN statistics from random data)."""

from __future__ import annotations

import numpy as np
import torch

from cimnas.hardware.crossbar import load_spec
from cimnas.nn.models import build_model

SCALE = 16  # pixel codes 0..16, as the digits dataset

# ResNet-20 widths (19) that exercise option-A zero-padding and truncation
RESNET_WIDTHS = [4, 3, 5, 4, 3, 5, 6, 4, 6, 5, 4, 3, 7, 6, 8, 4, 6, 5, 7]


def tiny_spec():
    """A 32 x 16 crossbar: layers span several row and column tiles."""
    return load_spec("mnsim-default", ["rows=32", "columns=4"])


@torch.no_grad()
def calibrate(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BN running statistics of one random batch, random gamma / beta (some negative): non-trivial comparators."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5 + 0.6)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3 + 0.3)
    model.train()
    model(pixels(64, seed + 1) / SCALE)
    return model.eval()


def pixels(n: int, seed: int = 0, shape=(1, 8, 8)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, SCALE + 1, (n, *shape), generator=g).float()


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    """Registered tiny models: resnet-A / resnet-B (thermometer input), lenet, mlp (BN), mlp-nobn, kbit-mlp,
    kbit-lenet; all on 1 x 8 x 8 inputs, 10 classes."""
    base = dict(in_channels=1, num_classes=10, image_size=8, seed=seed)
    if name.startswith("resnet"):
        model = build_model("resnet20", widths=RESNET_WIDTHS, precision="binary", shortcut=name[-1],
                            refactor={"thermometer": True, "thermometer_levels": 3}, **base)
    elif name == "lenet":
        model = build_model("lenet5", widths=[4, 6, 12, 8], precision="binary", **base)
    elif name == "mlp":
        model = build_model("mlp", hidden_sizes=[24, 16], bn=True, precision="binary", **base)
    elif name == "mlp-nobn":
        model = build_model("mlp", hidden_sizes=[24], precision="binary", **base)
    elif name == "kbit-mlp":
        model = build_model("mlp", hidden_sizes=[24, 16], bn=True, precision="kbit", bits=2, **base)
    elif name == "kbit-lenet":
        model = build_model("lenet5", widths=[4, 6, 12, 8], precision="kbit", bits=3, **base)
    else:
        raise KeyError(name)
    return calibrate(model, seed)


def as_codes(x: torch.Tensor) -> np.ndarray:
    return x.round().to(torch.int64).numpy()
