"""Weights <-> conductances: map a built, trained model onto ReRAM crossbars (aihwkit style).

`map_model(model, spec)` takes every QConv2d / QLinear, asks its weight quantizer for integer codes
(`to_integer(w) -> (codes, scale)`, codes * scale == q(w)) and programs them as conductances:

- unrolled layout: a conv weight (C_out, C_in, k, k) becomes a (k*k*C_in) x C_out matrix, rows in
  PyTorch's (c, i, j) order, so whole k x k kernels stay in one crossbar (MNSIM packing);
- sign: differential pair, HAWIS Eq. 2 (W = +1 -> (G+, G-) = (Gmax, Gmin), W = -1 -> (Gmin, Gmax));
- magnitude: |code| split into slices of bits_per_cell bits, slice i of significance
  2^(bits_per_cell * i); a cell of level v has G = Gmin + v / L * (Gmax - Gmin), L = 2^b - 1.

Read-back (`MappedLayer.read_weight`): W = scale * sum_i 2^(b i) * L * (G+_i - G-_i) / (Gmax - Gmin),
which with ideal devices is exactly codes * scale, i.e. the layer's quantized weight. Defects act on
the conductances (or on the read-back weight) and the result is set into `layer.weight_override`.
The dataflow itself (tiles, bit-serial inputs through the DAC, per-tile column currents, ADC, shift-add of
slices / bits, partial sums added across tiles) lives in `cimnas.hardware.dataflow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.energy import tile_layer
from cimnas.nn.convert import check_converted
from cimnas.nn.counting import LayerGeom
from cimnas.nn.layers import QConv2d, QLinear, quant_layers


@dataclass
class MappedLayer:
    """One conv / FC layer programmed onto crossbars.

    g_pos / g_neg: conductances in siemens, shape (slices, C_out, rows) with rows = k*k*C_in.
    """

    name: str
    layer: QConv2d | QLinear
    spec: CrossbarSpec
    weight_shape: tuple[int, ...]
    weight_bits: int
    slices: int
    scale: torch.Tensor
    g_pos: torch.Tensor
    g_neg: torch.Tensor
    kernel_size: int = 1
    tiles: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.g_pos.shape[2]

    def significance(self) -> torch.Tensor:
        """2^(bits_per_cell * i) for each slice i, shape (slices, 1, 1)."""
        b = self.spec.bits_per_cell
        return (2.0 ** (b * torch.arange(self.slices, device=self.g_pos.device))).view(-1, 1, 1)

    def slice_values(self, g_pos: torch.Tensor | None = None, g_neg: torch.Tensor | None = None) -> torch.Tensor:
        """Signed cell levels per slice, (G+ - G-) / (Gmax - Gmin) * L, shape (slices, C_out, rows)."""
        g_pos = self.g_pos if g_pos is None else g_pos
        g_neg = self.g_neg if g_neg is None else g_neg
        dg = self.spec.g_max_s - self.spec.g_min_s
        return (g_pos - g_neg) / dg * self.spec.cell_levels

    def read_weight(self, g_pos: torch.Tensor | None = None, g_neg: torch.Tensor | None = None) -> torch.Tensor:
        """Effective weight tensor (layer layout) from conductances (the ideal ones by default)."""
        g_pos = self.g_pos if g_pos is None else g_pos
        g_neg = self.g_neg if g_neg is None else g_neg
        diff = g_pos - g_neg
        diff = diff[0] if self.slices == 1 else (diff * self.significance()).sum(0)
        # (G+ - G-) / (Gmax - Gmin) * L * scale; dividing first keeps ideal binary levels exactly +-1
        diff = diff.div_(self.spec.g_max_s - self.spec.g_min_s).mul_(self.scale * self.spec.cell_levels)
        return diff.reshape(self.weight_shape)

    def crossbar_forward(self, x_codes: torch.Tensor, adc: bool = False) -> torch.Tensor:
        """Integer-domain matrix-vector products of unrolled input codes (N, rows) through the crossbars
        (`cimnas.hardware.dataflow.reference_forward`; adc=True converts each read with the spec's ADC)."""
        from cimnas.hardware.dataflow import reference_forward

        return reference_forward(self, x_codes, adc)


class MappedModel:
    """All crossbar-mapped layers of a model, with helpers to set / clear their weight overrides."""

    def __init__(self, model: nn.Module, spec: CrossbarSpec, layers: list[MappedLayer]):
        self.model = model
        self.spec = spec
        self.layers = layers

    def apply(self, weights: list[torch.Tensor]) -> None:
        """Set one effective weight per mapped layer as its `weight_override`."""
        for ml, w in zip(self.layers, weights, strict=True):
            ml.layer.weight_override = w

    def apply_ideal(self) -> None:
        """Read the ideal conductances back and set them as overrides (a no-op in function)."""
        self.apply([ml.read_weight() for ml in self.layers])

    def restore(self) -> None:
        """Remove every weight override (the model computes with its own quantized weights again)."""
        for ml in self.layers:
            ml.layer.weight_override = None

    def report(self) -> list[dict]:
        """Per layer: tiles, used rows / columns, utilization."""
        return [{"name": ml.name, **ml.tiles} for ml in self.layers]


def _weight_bits(layer: QConv2d | QLinear, spec: CrossbarSpec) -> int:
    bits = layer.weight_quantizer.bits
    return int(bits) if bits is not None else spec.float_weight_bits


def map_layer(name: str, layer: QConv2d | QLinear, spec: CrossbarSpec) -> MappedLayer:
    """Program one layer's quantized weight onto differential, bit-sliced crossbars."""
    with torch.no_grad():
        w = layer.active_weight().detach()
        wq = layer.weight_quantizer
        if wq.bits is None:
            raise CimnasError(
                f"layer {name} has float weights; crossbars store quantized codes. Build the model with "
                "precision='binary' or 'kbit' (or set a weight quantizer) before mapping"
            )
        codes, scale = wq.to_integer(w)
    bits = _weight_bits(layer, spec)
    slices = spec.slices(bits)
    codes = codes.round()
    mag = codes.abs().to(torch.int64).reshape(codes.shape[0], -1)  # (C_out, rows)
    if int(mag.max().item() if mag.numel() else 0) >= 2**bits:
        raise CimnasError(f"layer {name}: integer codes exceed {bits} bits; the quantizer and its bits disagree")
    b, L = spec.bits_per_cell, spec.cell_levels
    shifts = (b * torch.arange(slices, device=mag.device)).view(-1, 1, 1)
    levels = ((mag.unsqueeze(0) >> shifts) & L).to(torch.float32)  # (S, C_out, rows)
    positive = (codes.reshape(codes.shape[0], -1) >= 0).unsqueeze(0)
    dg = spec.g_max_s - spec.g_min_s
    g_level = spec.g_min_s + levels / L * dg
    g_off = torch.full_like(g_level, spec.g_min_s)
    g_pos = torch.where(positive, g_level, g_off)
    g_neg = torch.where(positive, g_off, g_level)
    k = int(layer.kernel_size[0]) if isinstance(layer, QConv2d) else 1
    groups = int(layer.groups) if isinstance(layer, QConv2d) else 1
    # a grouped conv sits block-diagonally on the crossbars (LayerGeom.rows); the cells off the diagonal blocks
    # hold no weight and are not simulated (their defects are not drawn)
    geom = LayerGeom(name, "conv" if isinstance(layer, QConv2d) else "fc", int(w.shape[1]) * groups,
                     int(w.shape[0]), k, 1, (1, 1), (1, 1), bits, layer.input_quantizer.bits, groups=groups)
    return MappedLayer(name, layer, spec, tuple(w.shape), bits, slices, scale.detach().to(torch.float32),
                       g_pos, g_neg, k, tile_layer(geom, spec))


def map_model(model: nn.Module, spec: CrossbarSpec) -> MappedModel:
    """Map every QConv2d / QLinear of a built model onto crossbars (after `set_widths`, if any). A plain layer
    that no conversion keeps digital, or an unmappable one, is a one-line error naming it
    (`cimnas.nn.convert.check_converted`): a Monte-Carlo trial must never silently spare a layer."""
    spec.validate()
    check_converted(model)
    layers = [map_layer(n, m, spec) for n, m in quant_layers(model)]
    if not layers:
        raise CimnasError("the model has no QConv2d / QLinear layers to map onto crossbars; convert it first "
                          "(cimnas.convert)")
    return MappedModel(model, spec, layers)
