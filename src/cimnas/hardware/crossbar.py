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
- [Walden] R. H. Walden, "Analog-to-digital converter survey and analysis", IEEE JSAC 17(4), 1999, and
  B. Murmann, "ADC Performance Survey 1997-2024" (github.com/bmurmann/ADC-survey): the Walden figure of
  merit FOM_W = P / (f_s 2^ENOB) is the energy per conversion step, so at a fixed FOM an ADC's energy per
  conversion doubles with each bit. `adc_energy_pj` scales `energy_adc_pj` (given at
  `adc_reference_bits`) by 2^(adc_bits - adc_reference_bits); `adc_area_um2` the same way (a SAR ADC's
  area is dominated by its binary-weighted capacitor DAC, 2^bits unit capacitors: an assumption, the
  survey has no area fit); `adc_round_latency_ns` by (bits + 2) / (reference + 2), MNSIM-2.0's ADC.py
  (latency = (precision + 2) / sample rate).
- [ISAAC DAC] The DAC table MNSIM-2.0 ships (Hardware_Model/DAC.py, from ISAAC): power and area 0.0039 mW /
  0.166 um^2 at 1 bit, doubling per bit (2, 3, 4 bits); `dac_energy_pj` / `dac_area_um2` scale the 1-bit
  figures by 2^(dac_bits - dac_reference_bits).
- [calib]  Per-event energies / times read off MNSIM-2.0's own per-component output on ResNet-20
  (REFERENCE-FACTS.md, "MNSIM-2.0 per component"): one constant per component for all rows, no
  per-width factor; tests/test_energy_mnsim.py checks the seven reference rows.
"""

from __future__ import annotations

import dataclasses
import typing
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
    purpose: str = ""
    """What the preset is for (informational; `cimnas presets` prints it)."""
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
    adc_reference_bits: int = 6
    """Resolution at which energy_adc_pj, area_adc_um2 and adc_latency_ns are given; other adc_bits scale
    them by the Walden figure of merit ([Walden]). [MNSIM] the 6-bit ADC (ADC_Choice 6)."""
    dac_reference_bits: int = 1
    """Resolution at which energy_dac_pj and area_dac_um2 are given; other dac_bits scale them by
    2^(dac_bits - dac_reference_bits) ([ISAAC DAC]). [MNSIM] the 1-bit DAC."""
    energy_cell_read_pj: float | None = 6.0e-5
    """Energy of one cell of one array in one read round in pJ; None = V^2 * (Gmax+Gmin)/2 * t_read
    (Ohm's law, ~3.6 fJ). [calib] 0.06 fJ: MNSIM-2.0's crossbar energy on ResNet-20 / its cell reads."""
    energy_dac_pj: float = 0.00586
    """Energy of one driven word line of a PE in one read round at dac_reference_bits in pJ.
    [calib] MNSIM-2.0 DAC energy on ResNet-20 / (charged PEs x max_row x rounds);
    about half its 1-bit DAC figure (0.012 pJ)."""
    energy_adc_pj: float = 5.04
    """Energy of one column conversion at adc_reference_bits in pJ. [calib] MNSIM-2.0 ADC energy on ResNet-20
    (ADC_Choice 6, power x latency) / (charged PEs x max_column x rounds); the 6-bit ADC is ~10 pJ at 1 GS/s [MNSIM]."""
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
    """ADC part of one read round at adc_reference_bits in ns.
    [calib] with read and digital: 8.9 ns per MNSIM read round."""
    digital_latency_ns: float = 4.4
    """Digital part of one read round in ns: input + shift register at 500 MHz (2 x 2 ns) and the
    mux / demux tenths. [MNSIM] Digital_Frequency = 500 MHz (PE_latency.py)."""
    buffer_bits_per_ns: float = 16.3
    """Output-buffer write bandwidth in bits per ns (partial sums, per position). [calib] MNSIM-2.0
    latency on ResNet-20 (64-bit SRAM bus)."""
    area_cell_um2: float = 1.44
    """Area of one 1T1R cell in um^2. [MNSIM] SimConfig.ini Device_Area = 1.44 um^2."""
    area_adc_um2: float = 6370.0
    """Area of one ADC at adc_reference_bits in um^2.
    [calib] MNSIM-2.0 area on ResNet-20: 4.32 mm^2 per tile of 4 PEs."""
    area_dac_um2: float = 1.0
    """Area of one DAC (word-line driver) at dac_reference_bits in um^2. [calib]"""
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

    @property
    def adc_energy_pj(self) -> float:
        """Energy of one conversion at adc_bits: energy_adc_pj x 2^(adc_bits - adc_reference_bits) ([Walden])."""
        return self.energy_adc_pj * 2.0 ** (self.adc_bits - self.adc_reference_bits)

    @property
    def adc_area_um2(self) -> float:
        """Area of one ADC at adc_bits: area_adc_um2 x 2^(adc_bits - adc_reference_bits) ([Walden], SAR cap DAC)."""
        return self.area_adc_um2 * 2.0 ** (self.adc_bits - self.adc_reference_bits)

    @property
    def adc_round_latency_ns(self) -> float:
        """ADC part of a read round at adc_bits: adc_latency_ns x (adc_bits + 2) / (reference + 2) (MNSIM ADC.py)."""
        return self.adc_latency_ns * (self.adc_bits + 2) / (self.adc_reference_bits + 2)

    @property
    def dac_energy_pj(self) -> float:
        """Energy of one word-line drive at dac_bits: energy_dac_pj x 2^(dac_bits - reference) ([ISAAC DAC])."""
        return self.energy_dac_pj * 2.0 ** (self.dac_bits - self.dac_reference_bits)

    @property
    def dac_area_um2(self) -> float:
        """Area of one DAC at dac_bits: area_dac_um2 x 2^(dac_bits - dac_reference_bits) ([ISAAC DAC])."""
        return self.area_dac_um2 * 2.0 ** (self.dac_bits - self.dac_reference_bits)

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
        for name in ("adc_reference_bits", "dac_reference_bits"):
            check(1 <= getattr(self, name) <= 16, f"{name} must be in 1..16, got {getattr(self, name)}")
        check(self.cell_type == "1T1R", f"cell_type {self.cell_type!r} is not modelled (a passive 0T1R crossbar has "
              "sneak paths this model does not simulate); use 1T1R")
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


# ---------------------------------------------------------------------- which fields act where
#: what each consumer of a spec reads: "energy" = hardware/energy.py (energy, latency, area), "accuracy" =
#: hardware/mapping.py + defects.py (conductances, defects, the dataflow simulator)
USES = ("energy", "accuracy")
_INFO = {"name", "purpose"}
_ENERGY_ONLY = {"cell_type", "read_voltage_v", "read_latency_ns", "differential", "bnn_readout", "crossbars_per_tile",
                "adcs_per_crossbar", "signed_inputs", "adc_reference_bits", "dac_reference_bits",
                "buffer_bits_per_ns"}
#: fields retired with the one line that says what to use instead
RETIRED = {"columns_per_adc": "columns_per_adc (NeuroSim's columns per ADC) is not a spec field: the MNSIM-style "
           "model charges adcs_per_crossbar ADCs per PE; set hardware.adcs_per_crossbar = columns / columns-per-ADC"}


def _reads(name: str, use: str) -> bool:
    """Does consumer `use` read spec field `name` at all? (energy.py reads every field; the accuracy side no
    energy, area or latency constant.)"""
    energy_only = name in _ENERGY_ONLY or name.startswith(("energy_", "area_")) or name.endswith("_latency_ns")
    return use == "energy" or not energy_only


def inert_fields(spec: CrossbarSpec, changed: list[str], uses: tuple[str, ...]) -> list[str]:
    """One line per changed field that no number of `uses` depends on under this spec (empty when all act)."""
    lines = []
    for name in changed:
        if name in _INFO:
            continue
        if not any(_reads(name, u) for u in uses):
            lines.append(f"hardware.{name} changes only energy / latency / area, which this command does not compute "
                         f"({'/'.join(uses)} only)")
        elif "accuracy" not in uses and name in ("g_max_s", "g_min_s", "read_voltage_v") \
                and spec.energy_cell_read_pj is not None:
            lines.append(f"hardware.{name} does not change energy on preset {spec.name}: its cell energy "
                         f"energy_cell_read_pj={spec.energy_cell_read_pj:g} pJ is calibrated; add "
                         "--set hardware.energy_cell_read_pj=null to derive it from V^2 (Gmax+Gmin)/2 t_read")
        elif name == "energy_sense_amp_pj" and spec.bnn_readout != "sense_amp":
            lines.append(f"hardware.energy_sense_amp_pj does not act on preset {spec.name}: it reads binary layers "
                         "through its ADC (bnn_readout=adc); add --set hardware.bnn_readout=sense_amp")
    return lines


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
              spec_file: str | Path | None = None, uses: tuple[str, ...] = USES) -> CrossbarSpec:
    """Preset (or a YAML file of CrossbarSpec fields) + `field=value` overrides -> validated spec.

    Overrides may be written `hardware.rows=128` (the config section's name), `spec.rows=128` or `rows=128`. An
    override that no number of `uses` depends on (`inert_fields`) is refused with the one line saying why, as is a
    retired field (`RETIRED`).
    """
    data = read_yaml(spec_file) if spec_file else _preset_data(preset_path(preset))
    data = {k: v for k, v in data.items() if k != "sources"}
    cleaned = [o.split(".", 1)[1] if o.startswith(("spec.", "hardware.")) else o for o in overrides or []]
    data = apply_overrides(data, cleaned)
    for key in data:
        check(key not in RETIRED, RETIRED.get(key, ""))
    spec = from_dict(CrossbarSpec, data, prefix="spec.")
    spec.validate()
    changed = [o.split("=", 1)[0].strip() for o in cleaned]
    inert = inert_fields(spec, changed, uses)
    check(not inert, inert[0] if inert else "")
    return spec



def _section_value(v: object) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def spec_from_section(section: dict | None, uses: tuple[str, ...] = USES) -> CrossbarSpec:
    """A config's `hardware` section (a dict, as stored in a run's config) -> spec; see `HardwareConfig`. A field
    left None keeps the preset's value (a null cell energy: `overrides: [energy_cell_read_pj=null]`)."""
    section = {k: v for k, v in (section or {}).items() if v is not None}
    preset = section.pop("preset", None) or "mnsim-default"
    overrides = list(section.pop("overrides", None) or [])
    return load_spec(preset, overrides + [f"{k}={_section_value(v)}" for k, v in section.items()], uses=uses)


def _hardware_spec(self, uses: tuple[str, ...] = USES) -> CrossbarSpec:
    """The CrossbarSpec this section describes (preset + the fields it sets)."""
    return spec_from_section(dataclasses.asdict(self), uses)


_SPEC_FIELDS = [f for f in dataclasses.fields(CrossbarSpec) if f.name not in ("name", "purpose")]
#: The `hardware` section of every command's config (energy, robustness, train, HAWIS, UAE, studies), one vocabulary:
#: `preset` (a `cimnas presets` name; default mnsim-default) and any CrossbarSpec field as its own key, None = the
#: preset's value (`hardware.rows: 128`, or `--set hardware.rows=128`); `overrides: [rows=128]` is the older list
#: form, still read. `spec()` builds the validated CrossbarSpec.
HardwareConfig = dataclasses.make_dataclass(
    "HardwareConfig",
    [("preset", str, dataclasses.field(default="mnsim-default")),
     ("overrides", list[str], dataclasses.field(default_factory=list))]
    + [(f.name, typing.get_type_hints(CrossbarSpec)[f.name] | None, dataclasses.field(default=None))
       for f in _SPEC_FIELDS],
    namespace={"spec": _hardware_spec, "validate": lambda self: self.spec() and None,
               "__doc__": "The `hardware` section of every config: `preset` + any CrossbarSpec field (None = the "
                          "preset's value); see cimnas.hardware.crossbar."},
)
HardwareConfig.__module__ = __name__
