"""Analytical energy / latency / area of one inference, per layer, in the MNSIM-2.0 style.

Per conv / FC layer (geometry from `cimnas.nn.counting.LayerGeom`):

- tiling (`tile_layer`): whole k x k kernels are packed per crossbar, floor(rows / k^2) input
  channels per tile (MNSIM: 28 for 3x3 on 256 rows), so row tiles = ceil(C_in / that);
  column tiles = ceil(C_out * slices / columns) with slices = weight_bits / bits_per_cell.
  `crossbars` counts logical tiles (a differential pos/neg pair is one tile, as HAWIS Fig. 5).
- charging (MNSIM-2.0 TCG + power x latency): crossbars are grouped into tiles of
  `crossbars_per_tile` (MNSIM default 4x4 PEs); a layer on n crossbars pays for
  ceil(n / tile) * min(n, tile) of them, and every charged crossbar is read like the layer's
  fullest one (max_row used rows, max_column used columns). This is where MNSIM's uneven steps
  between widths come from (28 input channels per 256-row crossbar, 256 columns, whole tiles).
- per output position and input cycle (cycles = ceil(act_bits / dac_bits); +-1 inputs count as
  2-bit signed, as MNSIM ran the BNNs): a crossbar is read in rounds of `rows_per_read` word lines
  (MNSIM DAC_Num = 16, capped by the ADC range) x ceil(max_column / adcs_per_crossbar) column
  rounds; each round converts on all `adcs_per_crossbar` ADCs of the pos/neg pair (MNSIM ADC_Num = 16,
  pos - neg subtracted in analog). ADC conversions = charged x row rounds x column rounds x ADCs.
  * cell reads = used rows x used columns x arrays; DAC conversions = used rows x column tiles x arrays;
  * shift-adds: one per conversion (significance shift, group/tile accumulation);
  * comparators: one per output value (fused BN + sign threshold of a BNN, requantizer otherwise);
  * buffers: inputs read once per column tile (k*k*C_in*act_bits bits), partial sums written
    and read once per row tile (C_out * psum_bits bits).
- latency: layers run one after the other; tiles of a layer run in parallel; per position and
  cycle a crossbar needs rounds x (t_read + t_adc) + t_digital (MNSIM PE_latency multiple_time).
- area: arrays x (cells + DACs) + per crossbar pair ADCs + digital periphery.

REFERENCE-FACTS.md: in MNSIM, ADCs and buffers are > 97 % of the energy, cells ~0.2-0.3 %.
docs/hardware.md compares the width ratios of binary ResNet-20 with MNSIM-2.0 and HAWIS Table II.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import replace

from torch import nn

from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.nn.counting import LayerGeom, trace_layers
from cimnas.nn.layers import QConv2d, QLinear

COMPONENTS = ("cells", "dac", "adc", "shift_add", "comparator", "buffer")


def layer_bits(g: LayerGeom, spec: CrossbarSpec) -> tuple[int, int]:
    """(weight bits, activation bits) of a layer; float layers count as spec.float_weight_bits."""
    wb = g.weight_bits if g.weight_bits is not None else spec.float_weight_bits
    ab = g.act_bits if g.act_bits is not None else spec.float_weight_bits
    return int(wb), int(ab)


def parallel_rows(spec: CrossbarSpec) -> int:
    """Word lines read together in one round: spec.rows_per_read (MNSIM DAC_Num), capped so that the
    column sum fits the ADC range (2^adc_bits - 1 unit currents) and by the crossbar height."""
    unit = spec.cell_levels * (2**spec.dac_bits - 1)
    return max(1, min(spec.rows, spec.rows_per_read, (2**spec.adc_bits - 1) // unit))


def input_cycles(act_bits: int, spec: CrossbarSpec) -> int:
    """DAC cycles per input: ceil(bits / dac_bits); +-1 binary inputs count as 2-bit signed (MNSIM)."""
    bits = act_bits + (1 if act_bits == 1 and spec.signed_binary_inputs else 0)
    return math.ceil(bits / spec.dac_bits)


def tile_layer(g: LayerGeom, spec: CrossbarSpec) -> dict:
    """Crossbar tiling of one layer: tiles, used rows / columns, row groups and utilization."""
    wb, _ = layer_bits(g, spec)
    slices = spec.slices(wb)
    k2 = g.kernel_size * g.kernel_size
    ch_per_tile = spec.channels_per_tile(g.kernel_size) if g.kind == "conv" else spec.rows
    row_tiles = math.ceil(g.in_channels / ch_per_tile)
    used_columns = g.out_channels * slices
    col_tiles = math.ceil(used_columns / spec.columns)
    pr = parallel_rows(spec)
    full, rest = divmod(g.in_channels, ch_per_tile)
    rows_full, rows_rest = ch_per_tile * k2, rest * k2
    if g.kind != "conv":
        rows_full, rows_rest = ch_per_tile, rest
    # groups summed over row tiles, and the largest per tile (sets latency)
    groups = full * math.ceil(rows_full / pr) + (math.ceil(rows_rest / pr) if rest else 0)
    max_groups = math.ceil((rows_full if full else rows_rest) / pr)
    crossbars = row_tiles * col_tiles
    # MNSIM-2.0 accounting (TCG + PE power x latency): crossbars are grouped into tiles, a layer pays
    # for whole tiles once it needs more than one, and every charged crossbar is read like the
    # layer's fullest one (max_row row groups x max_column columns)
    ct = spec.crossbars_per_tile
    charged = math.ceil(crossbars / ct) * min(crossbars, ct)
    used_rows = g.rows
    return {
        "slices": slices, "row_tiles": row_tiles, "col_tiles": col_tiles, "crossbars": crossbars,
        "arrays": crossbars * spec.arrays_per_tile, "used_rows": used_rows, "used_columns": used_columns,
        "row_groups": groups, "max_row_groups": max_groups, "charged_crossbars": charged,
        "max_columns": min(used_columns, spec.columns),
        "utilization": used_rows * used_columns / (crossbars * spec.rows * spec.columns),
    }


def estimate_layer(g: LayerGeom, spec: CrossbarSpec) -> dict:
    """Energy (uJ and per component pJ), latency (us), area (mm^2) and tiling of one layer."""
    t = tile_layer(g, spec)
    wb, ab = layer_bits(g, spec)
    cycles = input_cycles(ab, spec)
    arrays = spec.arrays_per_tile
    P = g.positions
    adcs = min(spec.adcs_per_crossbar, spec.columns)
    col_rounds = math.ceil(t["max_columns"] / adcs)
    rounds = t["max_row_groups"] * col_rounds  # read rounds of one crossbar per position and cycle
    # counts per output position, summed over cycles (module docstring); MNSIM: ADC energy =
    # (charged crossbars x ADCs per crossbar x P_adc) x (P x cycles x rounds x t_adc)
    n_conv = t["charged_crossbars"] * rounds * adcs * cycles
    n_cells = t["used_rows"] * t["used_columns"] * arrays * cycles
    n_dac = t["used_rows"] * t["col_tiles"] * arrays * cycles
    binary = wb == 1 and ab == 1
    e_conv = spec.energy_sense_amp_pj if (binary and spec.bnn_readout == "sense_amp") else spec.energy_adc_pj
    buffer_bits = t["used_rows"] * ab * t["col_tiles"] + 2 * t["row_tiles"] * g.out_channels * spec.psum_bits
    parts_pj = {
        "cells": P * n_cells * spec.cell_read_pj,
        "dac": P * n_dac * spec.energy_dac_pj,
        "adc": P * n_conv * e_conv,
        "shift_add": P * n_conv * spec.energy_shift_add_pj,
        "comparator": P * g.out_channels * spec.energy_comparator_pj,
        "buffer": P * buffer_bits * spec.energy_buffer_pj_per_bit,
    }
    latency_ns = P * cycles * (rounds * (spec.read_latency_ns + spec.adc_latency_ns) + spec.digital_latency_ns)
    area_um2 = (t["arrays"] * (spec.rows * spec.columns * spec.area_cell_um2 + spec.rows * spec.area_dac_um2)
                + t["crossbars"] * (adcs * spec.area_adc_um2 + spec.area_periphery_um2))
    macs = g.macs
    return {
        "name": g.name, "kind": g.kind, "in_channels": g.in_channels, "out_channels": g.out_channels,
        "kernel_size": g.kernel_size, "weight_bits": wb, "act_bits": ab, "input_cycles": cycles,
        **t,
        "energy_uj": sum(parts_pj.values()) * 1e-6,
        "energy_pj": parts_pj,
        "latency_us": latency_ns * 1e-3,
        "area_mm2": area_um2 * 1e-6,
        "biops": macs if g.is_binary else 0,
        "flops": 0 if g.is_binary else macs,
    }


def estimate(layers: list[LayerGeom], spec: CrossbarSpec) -> dict:
    """Per-layer and total energy (uJ), latency (us), area (mm^2), crossbars, BiOps, FLOPs."""
    per = [estimate_layer(g, spec) for g in layers]
    parts = {c: sum(r["energy_pj"][c] for r in per) for c in COMPONENTS}
    total_pj = sum(parts.values()) or 1.0
    return {
        "energy_uj": sum(r["energy_uj"] for r in per),
        "latency_us": sum(r["latency_us"] for r in per),
        "area_mm2": sum(r["area_mm2"] for r in per),
        "crossbars": sum(r["crossbars"] for r in per),
        "biops": sum(r["biops"] for r in per),
        "flops": sum(r["flops"] for r in per),
        "energy_breakdown": {c: v / total_pj for c, v in parts.items()},
        "layers": per,
    }


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
        layers = trace_layers(model, key)
        mods = dict(model.named_modules())
        per_model[key] = [(g, mods[g.name]) for g in layers]
        return layers
    out = []
    for g, m in per_model[key]:
        assert isinstance(m, QConv2d | QLinear)
        cin = m.active_in if m.active_in is not None else m.weight.shape[1]
        cout = m.active_out if m.active_out is not None else m.weight.shape[0]
        out.append(replace(g, in_channels=int(cin), out_channels=int(cout),
                           weight_bits=m.weight_quantizer.bits, act_bits=m.input_quantizer.bits))
    return out


def estimate_model(model: nn.Module, input_shape: tuple[int, ...], spec: CrossbarSpec) -> dict:
    """`estimate` of a model at its current widths (cached trace, see `model_geometry`)."""
    return estimate(model_geometry(model, input_shape), spec)
