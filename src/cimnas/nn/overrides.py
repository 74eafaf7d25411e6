"""`weight_overrides(model, weights)`: the one way to run a model with other weights than its own.

Every QConv2d / QLinear has a `weight_override` hook (None = off) that replaces its quantized weight in the
forward pass. Monte-Carlo defect trials, UAE noise samples and noise-aware training all set it through this
context manager, which restores whatever was there before on exit (also on an exception), so the clean weights
are never written to and no deep copy of the model is made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from cimnas.nn.layers import quant_layers


@contextmanager
def weight_overrides(model: nn.Module,
                     weights: Sequence[torch.Tensor | None] | Mapping[str, torch.Tensor] | None) -> Iterator[None]:
    """Inside the block the model's quantized layers compute with `weights`.

    `weights`: one tensor per layer of `quant_layers(model)` in order (None leaves that layer as it is), or a
    mapping from layer name to tensor, or None (nothing changes). Gradients of anything computed inside flow
    through the given tensors (noise-aware training keeps them attached to the clean weights).
    """
    layers = quant_layers(model)
    saved = [m.weight_override for _, m in layers]
    try:
        if isinstance(weights, Mapping):
            by_name = dict(layers)
            unknown = sorted(set(weights) - set(by_name))
            if unknown:
                raise KeyError(f"no quantized layer named {unknown[0]!r}")
            for name, w in weights.items():
                by_name[name].weight_override = w
        elif weights is not None:
            if len(weights) != len(layers):
                raise ValueError(f"{len(weights)} weights for {len(layers)} quantized layers")
            for (_, m), w in zip(layers, weights, strict=True):
                if w is not None:
                    m.weight_override = w
        yield
    finally:
        for (_, m), s in zip(layers, saved, strict=True):
            m.weight_override = s
