"""Layer geometry by shape tracing, and operation counts (HAWIS Tables III/IV columns).

`trace_layers(model, input_shape)` runs one forward pass with hooks and returns one `LayerGeom`
per QConv2d / QLinear in execution order, with the *active* (sliced) channel counts. The
hardware energy model and the HAWIS state space both read these records.

Counting convention (HAWIS Tables III/IV, Bi-Real/BATS): a multiply-accumulate whose weight and
input are both 1-bit is one binary operation (BiOp); any other MAC is one FLOP. A fully binarized
network therefore has 0 FLOPs in its conv/FC layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from cimnas.nn.layers import QConv2d, QLinear


@dataclass(frozen=True)
class LayerGeom:
    """Geometry of one conv or FC layer as executed (after slicing)."""

    name: str
    kind: str  # "conv" or "fc"
    in_channels: int  # conv: input channels; fc: input features
    out_channels: int  # conv: output channels; fc: output features
    kernel_size: int  # 1 for fc
    stride: int
    in_hw: tuple[int, int]  # input feature-map height, width ((1, 1) for fc)
    out_hw: tuple[int, int]  # output feature-map height, width ((1, 1) for fc)
    weight_bits: int | None  # magnitude bits of the weight codes; None = float
    act_bits: int | None  # bits of the layer's input activations; None = float

    @property
    def rows(self) -> int:
        """Crossbar rows of the unrolled weight matrix: k*k*C_in (conv) or in_features (fc)."""
        return self.kernel_size * self.kernel_size * self.in_channels

    @property
    def params(self) -> int:
        return self.rows * self.out_channels

    @property
    def positions(self) -> int:
        """Output positions per inference (one matrix-vector product each)."""
        return self.out_hw[0] * self.out_hw[1]

    @property
    def macs(self) -> int:
        return self.params * self.positions

    @property
    def is_binary(self) -> bool:
        return self.weight_bits == 1 and self.act_bits == 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(rows=self.rows, params=self.params, macs=self.macs)
        return d


def trace_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerGeom]:
    """One forward pass on zeros of shape (1, *input_shape); returns the executed layers in order."""
    records: list[LayerGeom] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(mod, inputs, output):
        x = inputs[0]
        w = mod.effective_weight() if mod.weight_override is None else mod.weight_override
        wbits = mod.weight_quantizer.bits
        abits = mod.input_quantizer.bits
        if isinstance(mod, QConv2d):
            records.append(LayerGeom(
                names[mod], "conv", int(w.shape[1]), int(w.shape[0]), int(mod.kernel_size[0]),
                int(mod.stride[0]), (int(x.shape[2]), int(x.shape[3])),
                (int(output.shape[2]), int(output.shape[3])), wbits, abits))
        else:
            records.append(LayerGeom(names[mod], "fc", int(w.shape[1]), int(w.shape[0]), 1, 1,
                                     (1, 1), (1, 1), wbits, abits))

    for m in model.modules():
        if isinstance(m, QConv2d | QLinear):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return records


def count_ops(layers: list[LayerGeom]) -> dict:
    """BiOps and FLOPs per layer and in total (see module docstring for the convention)."""
    per_layer = []
    for g in layers:
        biops = g.macs if g.is_binary else 0
        flops = 0 if g.is_binary else g.macs
        per_layer.append({"name": g.name, "biops": biops, "flops": flops, "params": g.params})
    return {
        "biops": sum(r["biops"] for r in per_layer),
        "flops": sum(r["flops"] for r in per_layer),
        "params": sum(r["params"] for r in per_layer),
        "layers": per_layer,
    }
