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
- [MNSIM code] thu-nics/MNSIM-2.0: shipped SimConfig.ini (DAC_Num = ADC_Num = 128, PE_Num = 2,2,
  Sub_Position = 0, Device_Area 1.44 um^2), Tile_connection_graph.py (tilenum, max_PE, max_row,
  max_column), PE_latency.py (multiple_time), Tile_latency.py (output-buffer writes),
  Model_energy.py (energy = power x latency).
- [calib]  Per-event energies / times read off MNSIM-2.0's own per-component output on ResNet-20
  (REFERENCE-FACTS.md, "MNSIM-2.0 per component"): one constant per component for all rows, no
  per-width factor; tests/test_energy_mnsim.py checks the seven reference rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from cimnas.config import apply_overrides, from_dict, read_yaml, shorten
from cimnas.errors import CimnasError, check

MAX_SPEC_INT = 1 << 20  #: the largest count (rows, columns, ADCs, bits) a spec may give


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
    crossbars_per_tile: int = 4
    """PEs (pos/neg crossbar pairs) per tile; a layer pays for whole tiles (MNSIM `tilenum x max_PE`).
    [MNSIM] shipped SimConfig.ini PE_Num = 2,2."""
    rows_per_read: int = 128
    """DACs per PE: word lines driven together in one read round; max_row used rows take
    ceil(max_row / this) rounds. [MNSIM] SimConfig.ini DAC_Num = 128."""
    adcs_per_crossbar: int = 128
    """ADCs per PE (pos - neg subtracted in analog, Sub_Position = 0); max_column used columns take
    ceil(max_column / this) rounds. [MNSIM] SimConfig.ini ADC_Num = 128."""
    signed_inputs: bool = False
    """MNSIM's signed setting: every input code carries one extra sign bit (one more DAC cycle), so a
    BNN runs as +-1 ("w2 a2") and 8 bits as 9-bit signed. False = charge the bits the layer's input
    quantizer produces ({0, 1} binary activations: one cycle of a 1-bit DAC, HAWIS Eq. 2)."""
    columns_per_adc: int = 8
    """Columns multiplexed onto one ADC in the NeuroSim style. [NeuroSim] 8. Not used by the
    MNSIM-style accounting in energy.py (which uses adcs_per_crossbar); kept for spec files."""
    energy_cell_read_pj: float | None = 6.0e-5
    """Energy of one cell of one array in one read round in pJ; None = V^2 * (Gmax+Gmin)/2 * t_read
    (Ohm's law, ~3.6 fJ). [calib] 0.06 fJ: MNSIM-2.0's crossbar energy on ResNet-20 / its cell reads."""
    energy_dac_pj: float = 0.00586
    """Energy of one driven word line of a PE in one read round in pJ. [calib] MNSIM-2.0 DAC energy on
    ResNet-20 / (charged PEs x max_row x rounds); about half its 1-bit DAC figure (0.012 pJ)."""
    energy_adc_pj: float = 5.04
    """Energy of one column conversion in pJ. [calib] MNSIM-2.0 ADC energy on ResNet-20 (ADC_Choice 6,
    power x latency) / (charged PEs x max_column x rounds); the 6-bit ADC is ~10 pJ at 1 GS/s [MNSIM]."""
    energy_sense_amp_pj: float = 0.25
    """Energy of one sense-amplifier decision (bnn_readout=sense_amp) in pJ. [calib] ~1/20 of the ADC."""
    energy_shift_add_pj: float = 0.02
    """Digital energy (shift-add, input / output registers, muxes) per column conversion in pJ.
    [calib] MNSIM-2.0 digital + pooling energy on ResNet-20 (under 0.5 % of the total)."""
    energy_buffer_pj_per_bit: float = 2.04
    """Energy per partial-sum bit a tile writes to its output buffer (once per output position) in pJ.
    [calib] MNSIM-2.0 buffer energy on ResNet-20 (SRAM power x bits / bus width / frequency)."""
    energy_buffer_cycle_pj_per_bit: float = 0.573
    """Energy per partial-sum bit moved through the buffer once more per input cycle (shift-and-add of
    bit-serial inputs) in pJ. [calib] MNSIM-2.0 buffer energy, w2 a2 vs w2 a1 on ResNet-20."""
    adc_latency_ns: float = 1.34
    """ADC part of one read round in ns. [calib] with read and digital: 8.9 ns per MNSIM read round."""
    digital_latency_ns: float = 4.4
    """Digital part of one read round in ns: input + shift register at 500 MHz (2 x 2 ns) and the
    mux / demux tenths. [MNSIM] Digital_Frequency = 500 MHz (PE_latency.py)."""
    buffer_bits_per_ns: float = 16.3
    """Output-buffer write bandwidth in bits per ns (partial sums, per position). [calib] MNSIM-2.0
    latency on ResNet-20 (64-bit SRAM bus)."""
    area_cell_um2: float = 1.44
    """Area of one 1T1R cell in um^2. [MNSIM] SimConfig.ini Device_Area = 1.44 um^2."""
    area_adc_um2: float = 6370.0
    """Area of one ADC in um^2. [calib] MNSIM-2.0 area on ResNet-20: 4.32 mm^2 per tile of 4 PEs."""
    area_dac_um2: float = 1.0
    """Area of one 1-bit DAC (word-line driver) in um^2. [calib]"""
    area_periphery_um2: float = 300000.0
    """Area of one tile's periphery (buffers, adders, joint module, pooling) in um^2. [calib]"""
    area_global_um2: float = 4.29e6
    """Area of the network's global accumulator and buffer in um^2 (once). [calib] MNSIM-2.0 area on
    ResNet-20 at 0 tiles (the tile-count intercept of U-1x, 2x, 4x and 8-bit)."""
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
        check(self.buffer_bits_per_ns > 0, f"buffer_bits_per_ns must be > 0, got {self.buffer_bits_per_ns}")
        for name in ("crossbars_per_tile", "rows_per_read", "adcs_per_crossbar"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.columns_per_adc >= 1, f"columns_per_adc must be >= 1, got {self.columns_per_adc}")
        check(self.float_weight_bits >= 1, "float_weight_bits must be >= 1")
        for f in dataclasses.fields(self):  # sizes and counts of a real chip; 2**64 rows would overflow later
            v = getattr(self, f.name)
            if isinstance(v, int) and not isinstance(v, bool):
                check(v <= MAX_SPEC_INT, f"{f.name} must be at most {MAX_SPEC_INT:,}, got {shorten(v)}")
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
    """The YAML file of preset NAME: a name of `list_presets()`, never a path (`--preset ../x` reads nothing
    outside the presets folder; a file of fields is `--spec FILE`, with the user-file checks)."""
    if name not in list_presets():
        raise CimnasError(f"unknown crossbar preset {shorten(name)}; choose one of: {', '.join(list_presets())} "
                          "(a file of spec fields goes to --spec FILE)")
    return _preset_dir() / f"{name}.yaml"


def _preset_data(path: Path) -> dict:
    """A preset's fields, through `read_yaml`'s checks like any file (size, value count, duplicate keys, a
    mapping at the top level)."""
    return read_yaml(path)


def load_spec(preset: str = "mnsim-default", overrides: list[str] | None = None,
              spec_file: str | Path | None = None) -> CrossbarSpec:
    """Preset (or a YAML file of CrossbarSpec fields) + `field=value` overrides -> validated spec.

    Overrides may be written `spec.rows=128` or `rows=128`.
    """
    data = read_yaml(spec_file) if spec_file else _preset_data(preset_path(preset))
    data = {k: v for k, v in data.items() if k != "sources"}
    cleaned = [o[len("spec."):] if o.startswith("spec.") else o for o in overrides or []]
    data = apply_overrides(data, cleaned)
    spec = from_dict(CrossbarSpec, data, prefix="spec.")
    spec.validate()
    return spec
