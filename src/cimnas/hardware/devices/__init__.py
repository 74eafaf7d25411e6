"""Device models (programming / read noise, drift + compensation, relaxation, finite levels) registered in the one
defect registry `cimnas.hardware.defects.DEFECTS`, and device presets as YAML with their sources."""

from cimnas.hardware.devices import models  # noqa: F401  (registers the models)
from cimnas.hardware.devices.config import DeviceConfig, DevicePreset, list_device_presets, load_device
from cimnas.hardware.devices.models import (
    Drift,
    FiniteLevels,
    ProgrammingNoise,
    ReadNoise,
    Relaxation,
    is_per_read,
)

__all__ = ["DeviceConfig", "DevicePreset", "list_device_presets", "load_device", "Drift", "FiniteLevels",
           "ProgrammingNoise", "ReadNoise", "Relaxation", "is_per_read"]
