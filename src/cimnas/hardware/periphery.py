"""The periphery that reads a crossbar: DAC input resolution, ADC resolution and saturation, output noise, and
first-order IR drop. Units: a column current is counted in *unit currents*, one conductance level step
(Gmax - Gmin) / L times one input unit, so an ideal read of integer codes is an integer.

- DAC (`dac`): input codes of a layer's activation quantizer are fed bit-serially, `dac_bits` per cycle (the
  crossbar spec); `input_bits` (aihwkit `inp_res` ~ 1 / (2^input_bits - 1)) keeps only the top bits of each code
  (round to the nearest multiple of 2^(code_bits - input_bits)), None = exact codes.
- ADC (`adc`): the column current of one row group, one slice and one input cycle is converted with `adc_bits`
  bits: unsigned (one array, digital subtraction) q = clamp(round(I / step), 0, 2^b - 1) * step, step =
  full_scale / (2^b - 1); signed (I+ - I-, analog subtraction) q = clamp(round(I / step), -M, M) * step, M =
  2^(b-1) - 1, step = full_scale / M (aihwkit `out_res` ~ 1 / (2^b - 1), `out_bound` = full_scale); reads beyond
  full scale saturate. full_scale None = one unit current per LSB (exact until it saturates).
- out_noise (aihwkit `out_noise`): N(0, out_noise) unit currents added to every ADC input, at every read.
- IR drop (`IRDrop`): wire resistance r per cell segment along rows and columns; first order, each cell sees its
  own series wire resistance, G_eff = G / (1 + G r (j + 1 + i')) with j its column index from the driver and
  i' = rows - i its row distance to the sense end (MemTorch / aihwkit-style first-order line resistance).
  It ignores the currents of the other cells sharing the wires (so it underestimates the drop of dense inputs);
  cost: one elementwise pass over the conductances per chip (at programming), nothing per inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cimnas.errors import check
from cimnas.hardware.defects import DEFECTS, DefectModel, check_finite

PERIPHERY_MODES = ("ideal", "tile")


@dataclass
class PeripheryConfig:
    """How a crossbar is read (aihwkit's IOParameters). `mode: ideal` reads exactly (the fast weight path);
    `mode: tile` runs every conv / FC through the per-tile dataflow (`cimnas.hardware.dataflow`)."""

    mode: Literal["ideal", "tile"] = "ideal"
    """ideal = exact reads (weights read back once per trial); tile = per-tile dataflow with DAC / ADC."""
    input_bits: int | None = None
    """DAC input resolution in bits (aihwkit inp_res); None = the layer's input codes exactly."""
    adc_bits: int | None = None
    """ADC resolution per column conversion in bits (aihwkit out_res); None = the crossbar spec's adc_bits."""
    adc_full_scale: float | None = None
    """ADC full scale in unit currents (aihwkit out_bound); None = 2^adc_bits - 1 (LSB = one unit current)."""
    rows_per_read: int | None = None
    """Word lines summed per ADC conversion; None = the spec's, capped so an exact read fits the ADC."""
    subtraction: Literal["analog", "digital"] = "analog"
    """analog: the ADC converts I+ - I- of a column pair (MNSIM Sub_Position 0); digital: each array, then subtract."""
    out_noise: float = 0.0
    """Std of additive noise at each ADC input, in unit currents, drawn at every read (aihwkit out_noise)."""
    wire_resistance_ohm: float = 0.0
    """Wire resistance per cell segment along rows and columns in ohm (first-order IR drop; 0 = none)."""

    def validate(self) -> None:
        check(self.mode in PERIPHERY_MODES, f"periphery.mode must be one of {', '.join(PERIPHERY_MODES)}, "
              f"got {self.mode!r}")
        check(self.input_bits is None or 1 <= self.input_bits <= 16,
              f"periphery.input_bits must be in 1..16 (or unset), got {self.input_bits}")
        check(self.adc_bits is None or 1 <= self.adc_bits <= 16,
              f"periphery.adc_bits must be in 1..16 (an ADC has at least 1 bit), got {self.adc_bits}")
        check(self.subtraction in ("analog", "digital"),
              f"periphery.subtraction must be analog or digital, got {self.subtraction!r}")
        check(self.subtraction == "digital" or self.adc_bits is None or self.adc_bits >= 2,
              "periphery.adc_bits must be >= 2 with analog subtraction (a signed conversion); got 1")
        check(self.adc_full_scale is None or check_finite(self.adc_full_scale, "periphery.adc_full_scale") > 0,
              f"periphery.adc_full_scale must be > 0 (or unset), got {self.adc_full_scale}")
        check(self.rows_per_read is None or self.rows_per_read >= 1,
              f"periphery.rows_per_read must be >= 1 (or unset), got {self.rows_per_read}")
        check_finite(self.out_noise, "periphery.out_noise")
        check_finite(self.wire_resistance_ohm, "periphery.wire_resistance_ohm")
        if self.mode == "ideal":
            touched = [k for k in ("input_bits", "adc_bits", "adc_full_scale", "rows_per_read")
                       if getattr(self, k) is not None] + (["out_noise"] if self.out_noise else [])
            check(not touched, f"periphery.{touched[0] if touched else ''} applies to periphery.mode=tile only; "
                  "set periphery.mode=tile (or drop it): the ideal path reads the crossbars exactly")

    def models(self) -> list[DefectModel]:
        """The conductance-level effects of the periphery (IR drop), applied once per chip."""
        return [] if self.wire_resistance_ohm == 0 else [DEFECTS.create("ir_drop",
                                                                       wire_resistance_ohm=self.wire_resistance_ohm)]


def dac(codes: torch.Tensor, code_bits: int, input_bits: int | None) -> torch.Tensor:
    """Input codes at the DAC's resolution: the top `input_bits` of `code_bits`-bit codes (round to nearest)."""
    if input_bits is None or input_bits >= code_bits:
        return codes
    step = 2.0 ** (code_bits - input_bits)
    return (torch.round(codes / step) * step).clamp(0, 2**code_bits - 1)


def adc(current: torch.Tensor, bits: int, full_scale: float | None = None, *, signed: bool = False,
        count: bool = True, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(converted current, number of saturated reads or None when not `count`): unsigned clamp(round(I / step),
    0, 2^b - 1) * step, or signed clamp(round(I / step), -M, M) * step with M = 2^(b-1) - 1; step = full_scale /
    top code, 1 when full_scale is None (module doc). The count is a 0-d tensor (no host sync). `inplace`
    overwrites `current` (the dataflow's fresh partial sums: one pass less)."""
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    check(top >= 1, f"a signed ADC needs at least 2 bits, got {bits}")
    low = -top if signed else 0
    step = 1.0 if full_scale is None else float(full_scale) / top
    if inplace:
        q = (current.div_(step) if step != 1.0 else current).round_()
    else:
        q = torch.round(current / step) if step != 1.0 else torch.round(current)
    clipped = ((q > top).sum() + (q < low).sum()) if count else None
    q = q.clamp_(low, top)
    return (q if step == 1.0 else q.mul_(step)), clipped


@DEFECTS.register("ir_drop", "first-order IR drop: G / (1 + G r (wire segments to the cell))")
class IRDrop(DefectModel):
    """First-order IR drop (module doc): G_eff = G / (1 + G r (j + 1 + rows - i)), with the cell's position
    (row i within its row tile, column j within its column tile of `spec.columns`), r the wire resistance per
    segment in ohm. Deterministic, applied once per chip (input-independent first order)."""

    per_read = False

    def __init__(self, wire_resistance_ohm: float = 0.0):
        self.r = check_finite(wire_resistance_ohm, "wire_resistance_ohm")

    @property
    def is_identity(self) -> bool:
        return self.r == 0

    def segments(self, ml, like: torch.Tensor) -> torch.Tensor:
        """Wire segments between drivers / sense end and each cell, shape (1, C_out, rows)."""
        spec = ml.spec
        k2 = ml.kernel_size**2 if len(ml.weight_shape) == 4 else 1
        rows_per_tile = spec.channels_per_tile(ml.kernel_size) * k2 if k2 > 1 else spec.rows
        i = torch.arange(like.shape[-1], device=like.device) % rows_per_tile
        j = torch.arange(like.shape[-2], device=like.device) % spec.columns
        n_rows = min(rows_per_tile, like.shape[-1])
        return ((j + 1).view(-1, 1) + (n_rows - i).view(1, -1)).to(like.dtype).unsqueeze(0)

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.is_identity:
            return g_pos, g_neg
        seg = self.segments(ml, g_pos) * self.r
        return g_pos / (1 + g_pos * seg), g_neg / (1 + g_neg * seg)
