"""`DeviceConfig`: which device effects a chip has (fields with units), and the device presets (YAML with sources).

A device file (or a shipped preset, `cimnas devices`) holds `name`, `sources` (list of strings: where every number
comes from), a `device:` section (DeviceConfig fields) and an optional `periphery:` section (PeripheryConfig
fields, `cimnas.hardware.periphery`). Overrides use the same dotted form as configs: `device.read_sigma=0.02`,
`periphery.adc_bits=6`. All-zero fields = ideal devices: no model is built and results equal the ideal path bit
for bit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from cimnas.config import apply_overrides, from_dict, read_yaml
from cimnas.errors import CimnasError, check
from cimnas.hardware.defects import DEFECTS, DefectModel, check_finite
from cimnas.hardware.periphery import PeripheryConfig


@dataclass
class DeviceConfig:
    """The physical effects of one kind of device (aihwkit's noise model), all relative to the crossbar's Gmax."""

    levels: int = 0
    """Programmable conductance states per cell, equally spaced in [Gmin, Gmax] (0 = as many as needed)."""
    programming_sigma_poly: list[float] = field(default_factory=list)
    """Programming noise sigma(G) / Gmax = sum_i c_i (G/Gmax)^i, once per chip and cell (empty = none)."""
    read_sigma: float = 0.0
    """Read noise std as a fraction of Gmax, drawn at every read (aihwkit w_noise, additive constant)."""
    drift_nu_mean: float = 0.0
    """Mean drift exponent nu in G(t) = G ((t + t0)/t0)^-nu (dimensionless), drawn per cell at programming."""
    drift_nu_std: float = 0.0
    """Std of nu across cells (dimensionless)."""
    drift_t0_s: float = 20.0
    """Drift reference time t0 in seconds (aihwkit PCM: 20 s)."""
    drift_compensation: bool = True
    """Whether the deployed chip rescales each layer from a calibration read (training, search; `cimnas
    robustness --time` reports both settings)."""
    relaxation_times_s: list[float] = field(default_factory=list)
    """Times (s, > 1 s, increasing) at which the conductance spread was measured after programming."""
    relaxation_sigma_polys: list[list[float]] = field(default_factory=list)
    """sigma(G, t_k) / Gmax polynomials in G/Gmax, one per relaxation time (programming poly = the 1 s spread)."""

    def validate(self) -> None:
        check(isinstance(self.levels, int) and (self.levels == 0 or self.levels >= 2),
              f"device.levels must be 0 (continuous) or >= 2 states, got {self.levels}")
        check_finite(self.read_sigma, "device.read_sigma")
        check_finite(self.drift_nu_mean, "device.drift_nu_mean")
        check_finite(self.drift_nu_std, "device.drift_nu_std")
        check(math.isfinite(self.drift_t0_s) and self.drift_t0_s > 0,
              f"device.drift_t0_s must be a finite number > 0, got {self.drift_t0_s}")
        self.models(0.0)  # the relaxation table and the polynomials are checked by the models themselves

    def models(self, time_s: float = 0.0, compensate: bool = False) -> list[DefectModel]:
        """The device models of a chip read at `time_s` seconds after programming, in physical order: levels,
        programming noise, drift (+ compensation), relaxation, then read noise (per read). Identity models
        are left out, so an ideal device gives []."""
        check_finite(time_s, "time")
        out = [DEFECTS.create("levels", n_states=self.levels),
               DEFECTS.create("programming_noise", sigma_poly=self.programming_sigma_poly),
               DEFECTS.create("drift", nu_mean=self.drift_nu_mean, nu_std=self.drift_nu_std, t0_s=self.drift_t0_s,
                              time_s=time_s, compensate=compensate),
               DEFECTS.create("relaxation", times_s=self.relaxation_times_s, sigma_polys=self.relaxation_sigma_polys,
                              programming_poly=self.programming_sigma_poly, time_s=time_s),
               DEFECTS.create("read_noise", sigma=self.read_sigma)]
        return [m for m in out if not m.is_identity]


@dataclass
class DevicePreset:
    """A device file: the device's effects and the periphery that reads it, with the sources of every number."""

    name: str = "custom"
    """Preset name (informational)."""
    sources: list[str] = field(default_factory=list)
    """Where each number comes from (paper, figure, or the fit it was read from)."""
    device: DeviceConfig = field(default_factory=DeviceConfig)
    periphery: PeripheryConfig = field(default_factory=PeripheryConfig)

    def validate(self) -> None:
        self.device.validate()
        self.periphery.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _preset_dir() -> Path:
    return Path(str(resources.files("cimnas.hardware.devices") / "presets"))


def list_device_presets() -> list[str]:
    """Names of the device presets shipped in cimnas/hardware/devices/presets."""
    return sorted(p.stem for p in _preset_dir().glob("*.yaml"))


def load_device(preset: str | None = None, overrides: list[str] | None = None,
                device_file: str | Path | None = None) -> DevicePreset:
    """A shipped preset (or a user's device YAML file) + `device.FIELD=VALUE` / `periphery.FIELD=VALUE` overrides
    -> validated DevicePreset. `ideal` (or None and no file) = no device effects."""
    check(preset is None or device_file is None, "give a device preset or a device file, not both")
    if device_file is not None:
        data = read_yaml(device_file)
    elif preset is None or preset == "ideal":
        data = {"name": "ideal"}
    else:
        path = _preset_dir() / f"{preset}.yaml"
        if not path.is_file():
            raise CimnasError(f"unknown device preset {preset!r}; choose one of: ideal, "
                              f"{', '.join(list_device_presets())}")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data = apply_overrides(dict(data), list(overrides or []))
    out = from_dict(DevicePreset, data)
    out.validate()
    return out
