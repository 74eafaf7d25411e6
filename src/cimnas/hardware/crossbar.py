"""CrossbarSpec: the ReRAM crossbar and its peripherals, with named YAML presets.

Every field carries its unit in its name and one docstring line saying what it is physically; every
default cites where it comes from. Sources (see ../shared/REFERENCE-FACTS.md, "Crossbar energy
models" and "MNSIM-2.0 on ResNet-20"):

- [MNSIM]  MNSIM-2.0 default configuration: 256x256 1T1R crossbars, R in {10 kOhm, 1 MOhm},
  0.15 V read voltage, 3.16 ns read latency, separate positive / negative crossbars, 1-bit DAC
  (~0.012 pJ), 6-bit ADC (~10 pJ per conversion, 1.26 mW at 1 GS/s), 130 nm.
- [ISAAC]  Shafiee et al., ISCA 2016: 8-bit ADC ~15.6 pJ per conversion; ADC area.
- [NeuroSim] DNN+NeuroSim: 8 columns share one ADC.
- [HAWIS]  The HAWIS authors' tolerance-test simulator: 64x64, Gmax 3.33e-4 S, Gmin 3.33e-7 S, 3.3 V.
- [MNSIM code] thu-nics/MNSIM-2.0: SimConfig.ini (DAC_Num = ADC_Num = 16 per crossbar group,
  Sub_Position = 0, default PE_Num 4x4 per tile), Tile_connection_graph.py (tilenum, max_PE,
  max_row, max_column), PE_latency.py (read rounds), Model_energy.py (energy = power x latency).
- [calib]  Constants not published in those sources (digital periphery, buffers), chosen so that
  ADC + buffers dominate as REFERENCE-FACTS.md reports for MNSIM; they barely move the width ratios.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from cimnas.config import apply_overrides, from_dict, read_yaml
from cimnas.errors import CimnasError, check


@dataclass
class CrossbarSpec:
    """One ReRAM crossbar tile and its peripheral circuits (MNSIM-2.0 style, 1 inference = 1 image).

    Weights are stored as conductances G in [g_min_s, g_max_s]; a signed weight uses a differential
    pair (HAWIS Eq. 2: W=+1 -> (G+, G-) = (Gmax, Gmin), W=-1 -> (Gmin, Gmax)); a k-bit magnitude is
    sliced over ceil(k / bits_per_cell) cells of significance 2^(bits_per_cell * i).
    """

    name: str = "custom"
    """Preset name (informational)."""
    rows: int = 256
    """Word lines per crossbar (inputs). [MNSIM] 256."""
    columns: int = 256
    """Bit lines per crossbar (outputs). [MNSIM] 256."""
    cell_type: Literal["1T1R", "0T1R"] = "1T1R"
    """Cell structure (1 transistor + 1 ReRAM, or passive). [MNSIM] 1T1R."""
    g_max_s: float = 1e-4
    """On (low-resistance state) conductance in siemens. [MNSIM] 1 / 10 kOhm."""
    g_min_s: float = 1e-6
    """Off (high-resistance state) conductance in siemens. [MNSIM] 1 / 1 MOhm."""
    read_voltage_v: float = 0.15
    """Read voltage on an active word line in volts. [MNSIM] 0.15 V."""
    read_latency_ns: float = 3.16
    """Time of one crossbar read (one input-bit cycle) in ns. [MNSIM] 3.16 ns."""
    bits_per_cell: int = 1
    """Bits stored per ReRAM cell (2^bits levels between g_min_s and g_max_s). [MNSIM] 1."""
    differential: bool = True
    """Signed weights on two arrays (positive and negative crossbars). [MNSIM] separate pos/neg."""
    dac_bits: int = 1
    """Input bits applied per cycle (activations fed bit-serially). [MNSIM][HAWIS] 1-bit DAC."""
    adc_bits: int = 6
    """ADC resolution per column conversion. [MNSIM] 6 bits."""
    bnn_readout: Literal["adc", "sense_amp"] = "adc"
    """Read-out of 1-bit x 1-bit layers: the spec's ADC (as MNSIM ran HAWIS) or a sense amplifier."""
    crossbars_per_tile: int = 16
    """Crossbars (pos/neg pairs) per tile. A layer on n crossbars is charged for
    ceil(n / this) * min(n, this) crossbars (MNSIM-2.0 TCG: tilenum * max_PE), each read like the
    layer's fullest crossbar (max_row, max_column). [MNSIM] default PE_Num 4x4 = 16 PEs per tile."""
    rows_per_read: int = 16
    """Word lines driven together in one read round (operation unit rows); a crossbar with R used rows
    is read in ceil(R / this) rounds. [MNSIM] SimConfig.ini DAC_Num = 16 per crossbar group."""
    adcs_per_crossbar: int = 16
    """ADCs per crossbar pair; C used columns take ceil(C / this) conversion rounds of all of them.
    [MNSIM] SimConfig.ini ADC_Num = 16 per group (pos - neg subtracted in analog, Sub_Position = 0)."""
    signed_binary_inputs: bool = True
    """+-1 activations are fed as sign + magnitude, i.e. 2 cycles of a 1-bit DAC (MNSIM ran the
    HAWIS BNNs in its 2-bit signed setting). [MNSIM]"""
    columns_per_adc: int = 8
    """Columns multiplexed onto one ADC in the NeuroSim style. [NeuroSim] 8. Not used by the
    MNSIM-style accounting in energy.py (which uses adcs_per_crossbar); kept for spec files."""
    energy_cell_read_pj: float | None = None
    """Energy of one cell read in pJ; None = V^2 * (Gmax+Gmin)/2 * t_read (physics, ~3.6 fJ)."""
    energy_dac_pj: float = 0.012
    """Energy of one DAC conversion (one word line driven for one cycle) in pJ. [MNSIM] ~0.012 pJ."""
    energy_adc_pj: float = 10.0
    """Energy of one ADC conversion in pJ. [MNSIM] 6-bit ~10 pJ (1.26 mW at 1 GS/s); [ISAAC] 8-bit 15.6."""
    energy_sense_amp_pj: float = 0.5
    """Energy of one sense-amplifier decision (bnn_readout=sense_amp) in pJ. [calib] ~1/20 of the ADC."""
    energy_shift_add_pj: float = 0.2
    """Energy of one shift-and-add of a digital partial sum (slices, input bits, tiles) in pJ. [calib]"""
    energy_comparator_pj: float = 0.05
    """Energy of one output comparison (fused BN + sign threshold, or ReLU/requantize) in pJ. [calib]"""
    energy_buffer_pj_per_bit: float = 0.2
    """Energy of one bit read from or written to the input/output SRAM buffers in pJ. [calib]"""
    psum_bits: int = 16
    """Width of a partial sum written to the output buffer in bits. [calib]"""
    adc_latency_ns: float = 1.0
    """Time of one ADC conversion in ns. [MNSIM] 1 GS/s."""
    digital_latency_ns: float = 1.0
    """Time of one shift-add / comparator / buffer step (pipelined, per cycle) in ns. [calib]"""
    area_cell_um2: float = 0.2
    """Area of one 1T1R cell in um^2 (~12 F^2 at F = 130 nm). [MNSIM] 130 nm."""
    area_adc_um2: float = 3000.0
    """Area of one ADC in um^2. [ISAAC] 1200 um^2 at 32 nm, scaled to 130 nm (rounded)."""
    area_dac_um2: float = 1.0
    """Area of one 1-bit DAC (word-line driver) in um^2. [calib]"""
    area_periphery_um2: float = 5000.0
    """Area of the digital periphery (shift-add, comparators, buffers) per crossbar in um^2. [calib]"""
    float_weight_bits: int = 16
    """Bits assumed for layers with float (unquantized) weights or activations (fixed-point). [calib]"""

    # ------------------------------------------------------------------ derived quantities
    @property
    def cell_levels(self) -> int:
        """Highest programmable level per cell (2^bits_per_cell - 1)."""
        return 2**self.bits_per_cell - 1

    @property
    def arrays_per_tile(self) -> int:
        """Physical arrays per logical crossbar tile (2 for a differential pair)."""
        return 2 if self.differential else 1

    @property
    def cell_read_pj(self) -> float:
        """Energy of one cell read in pJ (given, or from Ohm's law at the mean conductance)."""
        if self.energy_cell_read_pj is not None:
            return self.energy_cell_read_pj
        g_mean = 0.5 * (self.g_max_s + self.g_min_s)
        return self.read_voltage_v**2 * g_mean * self.read_latency_ns * 1e-9 * 1e12

    def channels_per_tile(self, kernel_size: int) -> int:
        """Whole k x k kernels packed per crossbar: floor(rows / k^2) input channels (MNSIM: 28 for 3x3)."""
        return max(1, self.rows // (kernel_size * kernel_size))

    def slices(self, weight_bits: int) -> int:
        """Cells per weight magnitude: weight_bits / bits_per_cell (must divide)."""
        check(
            weight_bits % self.bits_per_cell == 0,
            f"bits_per_cell={self.bits_per_cell} does not divide the weight bits ({weight_bits}); "
            f"choose bits_per_cell in {[b for b in range(1, weight_bits + 1) if weight_bits % b == 0]}",
        )
        return weight_bits // self.bits_per_cell

    def validate(self) -> None:
        check(self.rows >= 2 and self.columns >= 2,
              f"crossbar must be at least 2x2, got {self.rows}x{self.columns}; set rows/columns >= 2")
        check(0 < self.g_min_s < self.g_max_s,
              f"need 0 < g_min_s < g_max_s, got g_min_s={self.g_min_s}, g_max_s={self.g_max_s}")
        check(1 <= self.bits_per_cell <= 8, f"bits_per_cell must be in 1..8, got {self.bits_per_cell}")
        check(1 <= self.dac_bits <= 16, f"dac_bits must be in 1..16, got {self.dac_bits}")
        check(1 <= self.adc_bits <= 16, f"adc_bits must be in 1..16, got {self.adc_bits}")
        for name in ("crossbars_per_tile", "rows_per_read", "adcs_per_crossbar"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.columns_per_adc >= 1, f"columns_per_adc must be >= 1, got {self.columns_per_adc}")
        check(self.float_weight_bits >= 1, "float_weight_bits must be >= 1")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if (f.name.startswith(("energy_", "area_")) or f.name.endswith(("_ns", "_v"))) and v is not None:
                check(v >= 0, f"{f.name} must be >= 0, got {v}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- presets
def _preset_dir() -> Path:
    return Path(str(resources.files("cimnas.hardware") / "presets"))


def list_presets() -> list[str]:
    """Names of the YAML presets shipped in cimnas/hardware/presets."""
    return sorted(p.stem for p in _preset_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = _preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise CimnasError(f"unknown crossbar preset {name!r}; choose one of: {', '.join(list_presets())}")
    return path


def load_spec(preset: str = "mnsim-default", overrides: list[str] | None = None,
              spec_file: str | Path | None = None) -> CrossbarSpec:
    """Preset (or a YAML file of CrossbarSpec fields) + `field=value` overrides -> validated spec.

    Overrides may be written `spec.rows=128` or `rows=128`.
    """
    data = read_yaml(spec_file) if spec_file else read_yaml(preset_path(preset))
    data = {k: v for k, v in data.items() if k != "sources"}
    cleaned = [o[len("spec."):] if o.startswith("spec.") else o for o in overrides or []]
    data = apply_overrides(data, cleaned)
    spec = from_dict(CrossbarSpec, data, prefix="spec.")
    spec.validate()
    return spec
