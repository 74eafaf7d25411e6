"""CrossbarSpec: presets, validation, derived quantities."""

import dataclasses

import pytest

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec, list_presets, load_spec


def test_presets_load_and_validate():
    names = list_presets()
    assert {"mnsim-default", "hawis-tolerance"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.name == name
    d = load_spec("mnsim-default")
    assert (d.rows, d.columns, d.dac_bits, d.adc_bits) == (256, 256, 1, 6)
    assert d.g_max_s == pytest.approx(1 / 10e3) and d.g_min_s == pytest.approx(1 / 1e6)
    h = load_spec("hawis-tolerance")
    assert (h.rows, h.columns, h.g_max_s, h.g_min_s, h.read_voltage_v) == (64, 64, 3.33e-4, 3.33e-7, 3.3)


def test_preset_matches_dataclass_defaults():
    # the default dataclass is the MNSIM preset, field for field (so the docstrings' sources hold)
    a, b = dataclasses.asdict(load_spec("mnsim-default")), dataclasses.asdict(CrossbarSpec())
    for d in (a, b):
        d.pop("name"), d.pop("purpose")
    assert a == b


def test_unknown_preset_lists_valid():
    with pytest.raises(CimnasError, match="mnsim-default"):
        load_spec("nope")


@pytest.mark.parametrize("override", ["rows=1", "columns=1", "g_min_s=1.0", "bits_per_cell=0", "energy_adc_pj=-1"])
def test_bad_spec(override):
    with pytest.raises(CimnasError):
        load_spec("mnsim-default", [override])


def test_overrides_with_prefix():
    assert load_spec("mnsim-default", ["spec.rows=128", "columns=64"]).rows == 128


def test_bits_per_cell_must_divide():
    spec = CrossbarSpec(bits_per_cell=3)
    with pytest.raises(CimnasError, match="does not divide"):
        spec.slices(8)
    assert CrossbarSpec(bits_per_cell=2).slices(8) == 4


def test_cell_read_energy_from_ohms_law():
    assert CrossbarSpec().cell_read_pj == 6.0e-5  # mnsim-default: MNSIM-2.0's own figure [calib]
    s = CrossbarSpec(energy_cell_read_pj=None)
    # V^2 * G_mean * t = 0.15^2 * 5.05e-5 S * 3.16e-9 s = 3.59e-15 J
    assert s.cell_read_pj == pytest.approx(0.15**2 * 5.05e-5 * 3.16e-9 * 1e12)
    assert s.channels_per_tile(3) == 28 and s.channels_per_tile(1) == 256
