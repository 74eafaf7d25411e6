"""ReRAM crossbar hardware model: spec + presets, mapping, energy, defects, Monte-Carlo robustness."""

from cimnas.hardware.crossbar import CrossbarSpec, list_presets, load_spec
from cimnas.hardware.defects import DEFECTS, DefectConfig, DefectModel, sample_weight
from cimnas.hardware.devices import DeviceConfig, DevicePreset, list_device_presets, load_device
from cimnas.hardware.energy import estimate, estimate_model, model_geometry, tile_layer
from cimnas.hardware.mapping import MappedLayer, MappedModel, map_model
from cimnas.hardware.montecarlo import MCResult, evaluate_trials, robustness_sweep

__all__ = [
    "CrossbarSpec", "list_presets", "load_spec", "DEFECTS", "DefectConfig", "DefectModel", "sample_weight",
    "estimate", "estimate_model", "model_geometry", "tile_layer", "MappedLayer", "MappedModel", "map_model",
    "MCResult", "evaluate_trials", "robustness_sweep", "DeviceConfig", "DevicePreset", "list_device_presets",
    "load_device",
]
