"""Analytical energy / latency / area of one inference, per layer, following MNSIM-2.0's accounting.

MNSIM-2.0 (thu-nics/MNSIM-2.0) charges every component as power x busy time (Model_energy.py), the
power of a layer being that of its whole tiles (Model_inference_power.py: tile power x `tilenum`,
each tile at `max_PE`, `max_row`, `max_column`) and the time a per-position `multiple_time`
(PE_latency.py). The facts taken from it, per conv / FC layer (geometry: `LayerGeom`):

- mapping (Tile_connection_graph.py): a PE is one pos/neg crossbar pair. Whole k x k kernels are
  packed per crossbar, floor(rows / k^2) input channels (28 for 3x3 on 256 rows) -> `row_tiles`;
  every weight bit slice has its own PEs, `col_tiles` = slices x ceil(C_out / columns). PEs =
  row_tiles x col_tiles, `tiles` = ceil(PEs / crossbars_per_tile), `max_pe` = min(PEs, per tile);
  the layer pays for tiles x max_pe PEs ("charged"), each read like its fullest crossbar:
  max_row = min(channels per crossbar, C_in) k^2, max_column = min(C_out, columns).
- read rounds per output position (`multiple_time`): input cycles x ceil(max_row / DAC_Num) x
  ceil(max_column / ADC_Num); input cycles = ceil(bits / dac_bits) of the layer's input code, plus
  one sign cycle when the code is signed or the spec asks for MNSIM's signed setting (`signed_inputs`).
- per position and charged PE, each read round costs: crossbar cells 2 arrays x max_row x max_column
  x `energy_cell_read_pj`; DACs max_row x `dac_energy_pj`; ADCs max_column x `adc_energy_pj` (or the
  sense amplifier for 1-bit x 1-bit layers with `bnn_readout: sense_amp`); digital (shift-add,
  registers, muxes) max_column x `energy_shift_add_pj`.
- buffers (Tile_latency.py): per position each tile writes its PEs' partial sums,
  (adc_bits + ceil(log2 max_pe)) x max_column x max_pe bits, to its output buffer
  (`energy_buffer_pj_per_bit`), and moves them once more per input cycle for the shift-and-add
  (`energy_buffer_cycle_pj_per_bit`).
- latency: layers in sequence; per position rounds x (t_read + t_adc + t_digital) plus the
  partial-sum write at `buffer_bits_per_ns`.
- converters: the ADC's energy, area and latency and the DAC's energy and area follow their resolution
  (`CrossbarSpec.adc_energy_pj` etc.: Walden figure of merit, 2^bits per conversion; MNSIM's ISAAC DAC
  table), equal to the calibrated constants at the preset's own resolution.
- area: tiles x (PEs per tile x (2 arrays x (cells + DACs) + ADCs) + tile periphery) + one global
  accumulator / buffer per network.

The per-event constants of `mnsim-default` were read off MNSIM-2.0's own per-component output on
ResNet-20 (REFERENCE-FACTS.md); `tests/test_energy_mnsim.py` checks all seven reference rows.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import nn

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.nn.convert import check_mappable, conversion_of
from cimnas.nn.counting import LayerGeom, arch_geometry, trace_layers
from cimnas.nn.layers import QConv2d, QLinear

COMPONENTS = ("cells", "dac", "adc", "buffer", "digital")


def layer_bits(g: LayerGeom, spec: CrossbarSpec) -> tuple[int, int]:
    """(weight bits, activation bits) of a layer; float layers count as spec.float_weight_bits."""
    wb = g.weight_bits if g.weight_bits is not None else spec.float_weight_bits
    ab = g.act_bits if g.act_bits is not None else spec.float_weight_bits
    return int(wb), int(ab)


def parallel_rows(spec: CrossbarSpec) -> int:
    """Word lines the dataflow simulator (mapping.py) sums per ADC conversion: spec.rows_per_read,
    capped so that the column sum fits the ADC range (2^adc_bits - 1 unit currents). The energy
    model charges MNSIM's read rounds of rows_per_read word lines (`read_rounds`), without that cap."""
    unit = spec.cell_levels * (2**spec.dac_bits - 1)
    return max(1, min(spec.rows, spec.rows_per_read, (2**spec.adc_bits - 1) // unit))


def input_cycles(act_bits: int, spec: CrossbarSpec, signed: bool = False) -> int:
    """DAC cycles per input: ceil(bits / dac_bits), one more bit for a signed code or when the spec
    uses MNSIM's signed setting (`signed_inputs`: the BNN run as +-1, 8-bit as 9-bit signed)."""
    bits = act_bits + (1 if signed or spec.signed_inputs else 0)
    return math.ceil(bits / spec.dac_bits)


def tile_layer(g: LayerGeom, spec: CrossbarSpec) -> dict:
    """MNSIM mapping of one layer: PEs (pos/neg crossbar pairs), tiles, fullest crossbar, utilization."""
    wb, _ = layer_bits(g, spec)
    slices = spec.slices(wb)
    k2 = g.kernel_size * g.kernel_size
    if g.kind == "conv":
        ch = spec.channels_per_tile(g.kernel_size)
        row_tiles, max_row = math.ceil(g.in_channels / ch), min(ch, g.in_channels) * k2
    else:
        row_tiles, max_row = math.ceil(g.in_channels / spec.rows), min(g.in_channels, spec.rows)
    col_tiles = slices * math.ceil(g.out_channels / spec.columns)
    crossbars = row_tiles * col_tiles
    per_tile = spec.crossbars_per_tile
    tiles = math.ceil(crossbars / per_tile)
    max_pe = min(crossbars, per_tile)
    return {
        "slices": slices, "row_tiles": row_tiles, "col_tiles": col_tiles, "crossbars": crossbars,
        "arrays": crossbars * spec.arrays_per_tile, "tiles": tiles, "max_pe": max_pe,
        "charged_crossbars": tiles * max_pe, "used_rows": g.rows, "used_columns": g.out_channels * slices,
        "max_rows": max_row, "max_columns": min(g.out_channels, spec.columns),
        "utilization": g.params * slices / (crossbars * spec.rows * spec.columns),
    }


def read_rounds(t: dict, cycles: int, spec: CrossbarSpec) -> int:
    """MNSIM `multiple_time`: read rounds of one crossbar per output position."""
    dacs = min(spec.rows_per_read, spec.rows)
    adcs = min(spec.adcs_per_crossbar, spec.columns)
    return cycles * math.ceil(t["max_rows"] / dacs) * math.ceil(t["max_columns"] / adcs)


def tile_area_um2(spec: CrossbarSpec) -> float:
    """Area of one tile: its PEs (2 arrays of cells + DACs, shared ADCs) and the tile periphery."""
    pe = (spec.arrays_per_tile * (spec.rows * spec.columns * spec.area_cell_um2 + spec.rows * spec.dac_area_um2)
          + min(spec.adcs_per_crossbar, spec.columns) * spec.adc_area_um2)
    return spec.crossbars_per_tile * pe + spec.area_periphery_um2


def estimate_layer(g: LayerGeom, spec: CrossbarSpec) -> dict:
    """Energy (uJ and per component pJ), latency (us), area (mm^2) and mapping of one layer."""
    t = tile_layer(g, spec)
    wb, ab = layer_bits(g, spec)
    cycles = input_cycles(ab, spec, g.act_signed)
    rounds = read_rounds(t, cycles, spec)
    P, charged = g.positions, t["charged_crossbars"]
    rows, cols = t["max_rows"], t["max_columns"]
    binary = wb == 1 and ab == 1
    e_conv = spec.energy_sense_amp_pj if (binary and spec.bnn_readout == "sense_amp") else spec.adc_energy_pj
    merge_bits = math.ceil(math.log2(t["max_pe"])) if t["max_pe"] > 1 else 0
    psum_bits = (spec.adc_bits + merge_bits) * cols * t["max_pe"]  # one tile's partial sums per position
    per_round = P * charged * rounds  # crossbar read rounds of the layer (all charged PEs)
    parts_pj = {
        "cells": per_round * spec.arrays_per_tile * rows * cols * spec.cell_read_pj,
        "dac": per_round * rows * spec.dac_energy_pj,
        "adc": per_round * cols * e_conv,
        "buffer": P * t["tiles"] * psum_bits * (spec.energy_buffer_pj_per_bit
                                                + cycles * spec.energy_buffer_cycle_pj_per_bit),
        "digital": per_round * cols * spec.energy_shift_add_pj,
    }
    t_round = spec.read_latency_ns + spec.adc_round_latency_ns + spec.digital_latency_ns
    latency_ns = P * (rounds * t_round + psum_bits / spec.buffer_bits_per_ns)
    macs = g.macs
    return {
        "name": g.name, "kind": g.kind, "in_channels": g.in_channels, "out_channels": g.out_channels,
        "kernel_size": g.kernel_size, "weight_bits": wb, "act_bits": ab, "input_cycles": cycles,
        "positions": P, "read_rounds": rounds, **t,
        "energy_uj": sum(parts_pj.values()) * 1e-6,
        "energy_pj": parts_pj,
        "latency_us": latency_ns * 1e-3,
        "area_mm2": t["tiles"] * tile_area_um2(spec) * 1e-6,
        "biops": macs if g.is_binary else 0,
        "flops": 0 if g.is_binary else macs,
    }


def estimate(layers: list[LayerGeom], spec: CrossbarSpec) -> dict:
    """Per-layer and total energy (uJ), latency (us), area (mm^2), crossbars, BiOps, FLOPs. No layer is an
    error, not 0 uJ (a plain PyTorch model traces no crossbar layer: convert it first)."""
    if not layers:
        raise CimnasError("no layer on a crossbar to estimate (a plain PyTorch model must be converted first: "
                          "cimnas.convert(model), or --model-file / --model on the command line)")
    per = [estimate_layer(g, spec) for g in layers]
    parts = {c: sum(r["energy_pj"][c] for r in per) for c in COMPONENTS}
    total_pj = sum(parts.values()) or 1.0
    return {
        "energy_uj": sum(r["energy_uj"] for r in per),
        "latency_us": sum(r["latency_us"] for r in per),
        "area_mm2": sum(r["area_mm2"] for r in per) + (spec.area_global_um2 * 1e-6 if per else 0.0),
        "crossbars": sum(r["crossbars"] for r in per),
        "arrays": sum(r["arrays"] for r in per),
        "tiles": sum(r["tiles"] for r in per),
        "biops": sum(r["biops"] for r in per),
        "flops": sum(r["flops"] for r in per),
        "energy_components_uj": {c: v * 1e-6 for c, v in parts.items()},
        "energy_breakdown": {c: v / total_pj for c, v in parts.items()},
        "layers": per,
    }


def estimate_arch(model_name: str, spec: CrossbarSpec, *, widths: Sequence[int] | str | None = None,
                  width_mult: float = 1.0, precision: str = "binary", bits: int = 8,
                  input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                  refactor: Any = None, **model_kw: Any) -> dict:
    """`estimate` of a registered model from its description alone: no weights are allocated
    (`cimnas.nn.counting.arch_geometry`). Arguments as `cimnas.nn.models.build_model`."""
    c, h, w = (int(v) for v in input_shape)
    layers = arch_geometry(model_name, in_channels=c, num_classes=num_classes, image_size=h if h == w else (h, w),
                           widths=widths, width_mult=width_mult, precision=precision, bits=bits,
                           refactor=refactor, **model_kw)
    return estimate(layers, spec)


# ---------------------------------------------------------------- fast path for search loops
_TRACE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_geometry(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerGeom]:
    """LayerGeom list of `model` at its current widths, tracing only once per (model, input shape).

    Spatial sizes, kernels and strides do not change with widths, so after the first trace the
    channel counts are refreshed from each layer's `active_in` / `active_out` (set by
    `set_widths`), which costs microseconds instead of a forward pass.
    """
    key = tuple(int(s) for s in input_shape)
    per_model = _TRACE_CACHE.setdefault(model, {})
    if key not in per_model:
        check_mappable(model, key)  # nothing unconverted or unmappable is silently left out of the estimate
        layers = trace_layers(model, key)
        mods = dict(model.named_modules())
        per_model[key] = [(g, mods[g.name]) for g in layers]
        return layers
    out = []
    for g, m in per_model[key]:
        assert isinstance(m, QConv2d | QLinear)
        cin = (m.active_in if m.active_in is not None else m.weight.shape[1]) * (m.groups if g.kind == "conv" else 1)
        cout = m.active_out if m.active_out is not None else m.weight.shape[0]
        out.append(replace(g, in_channels=int(cin), out_channels=int(cout),
                           weight_bits=m.weight_quantizer.bits, act_bits=m.input_quantizer.bits,
                           act_signed=bool(getattr(m.input_quantizer, "signed", False))))
    return out


def estimate_model(model: nn.Module, input_shape: tuple[int, ...], spec: CrossbarSpec) -> dict:
    """`estimate` of a model at its current widths (cached trace, see `model_geometry`), plus `digital`: the
    modules a conversion keeps off the crossbars (charged nothing, listed so that no layer is skipped silently).
    A model with unconverted or unmappable layers, or none on a crossbar, is a one-line error
    (`cimnas.nn.convert.check_mappable`)."""
    res = estimate(model_geometry(model, input_shape), spec)
    conv = conversion_of(model)
    res["digital"] = list(conv.digital) if conv is not None else []
    return res
