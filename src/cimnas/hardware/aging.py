"""Accuracy over time since programming under a device preset (`cimnas robustness --device-model P --time ...`).

At every time t the same T chips are evaluated (trial t of every time point and of both compensation settings
draws from derive_seed(seed, "mc-trial", t), and every device model draws its random numbers whether or not t
changes them), so the curves over time follow the same chips: programming noise is drawn once, drift and
relaxation move it, read noise is new at every read. With drift compensation, each layer's output is rescaled
by one factor from a calibration read (`devices.models.Drift`). Ideal devices give today's results bit for bit.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from cimnas.errors import CimnasError, check
from cimnas.hardware.chip import split_models
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig, DefectModel
from cimnas.hardware.devices.config import DevicePreset, load_device
from cimnas.hardware.mapping import map_model
from cimnas.hardware.montecarlo import CachedBatches, evaluate_trials

#: seconds per unit of a time string (y = 365 days)
TIME_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}


def parse_time(text: str) -> float:
    """'0', '20s', '1h', '1d', '1y', '2.5d' -> seconds (finite, >= 0)."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-z]*)\s*", str(text))
    value = None
    if m and (m.group(2) in TIME_UNITS or m.group(2) == ""):
        try:
            value = float(m.group(1)) * TIME_UNITS.get(m.group(2) or "s", 1.0)
        except ValueError:
            value = None
    if value is None:
        raise CimnasError(f"time {text!r} not understood; write a number with a unit s, m, h, d, w or y (e.g. 1h)")
    check(math.isfinite(value) and value >= 0, f"time {text!r} must be finite and >= 0 (seconds since programming)")
    return value


def parse_times(text: str) -> list[tuple[str, float]]:
    """'0,1h,1d,1y' -> [(label, seconds)], in the given order."""
    labels = [t.strip() for t in str(text).split(",") if t.strip()]
    check(bool(labels), f"--time {text!r} is empty; give comma-separated times such as 0,1h,1d,1y")
    return [(lab, parse_time(lab)) for lab in labels]


def chip_models(preset: DevicePreset, time_s: float, compensate: bool,
                defects: DefectConfig | None = None) -> list[DefectModel]:
    """The models of a chip at `time_s`, in physical order: the device's programming-time effects, today's
    defects (variation, stuck-at, gaussian), the periphery's IR drop, then read noise (drawn per read)."""
    chip, per_read = split_models(preset.device.models(time_s, compensate))
    return chip + (defects.build() if defects is not None else []) + preset.periphery.models() + per_read


def device_models(device: str, time_s: float = 0.0, defects: DefectConfig | None = None
                  ) -> tuple[DevicePreset, list[DefectModel]]:
    """(preset, chip models) of a device preset name (`cimnas devices`; "ideal" = none) read `time_s` after
    programming, with the preset's own drift-compensation setting: what training and search use."""
    preset = load_device(device)
    return preset, chip_models(preset, time_s, preset.device.drift_compensation, defects)


def accuracy_over_time(models: dict[str, nn.Module], split, spec: CrossbarSpec, preset: DevicePreset,
                       times: list[tuple[str, float]], trials: int, seed: int, *, defects: DefectConfig | None = None,
                       batch_size: int = 512, device: str | torch.device = "cpu", max_samples: int | None = None,
                       progress: bool = False) -> dict:
    """{"device", "times": [{"time", "time_s", "models": {label: {"uncompensated": MCResult dict,
    "compensated": ...}}}]}; the compensated entry is left out when the device does not drift."""
    device = torch.device(device)
    batches = CachedBatches(split, batch_size, device, max_samples)
    mapped = {}
    for label, model in models.items():
        model.to(device).eval()
        mapped[label] = map_model(model, spec)
    settings = [False, True] if preset.device.drift_nu_mean > 0 or preset.device.drift_nu_std > 0 else [False]
    rows = []
    for label_t, t in times:
        entry: dict = {"time": label_t, "time_s": t, "models": {}}
        for label, model in models.items():
            entry["models"][label] = {
                ("compensated" if comp else "uncompensated"): evaluate_trials(
                    model, None, spec, chip_models(preset, t, comp, defects), trials, seed, device=device,
                    mapped=mapped[label], batches=batches, periphery=preset.periphery, progress=progress).to_dict()
                for comp in settings}
        rows.append(entry)
    return {"device": preset.to_dict(), "spec": spec.to_dict(), "trials": trials, "seed": seed,
            "samples": batches.n, "times": rows}
