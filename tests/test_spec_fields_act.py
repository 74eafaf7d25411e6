"""Every CrossbarSpec field acts on the numbers it names, or is refused with one line (issue 24 point 1)."""

import dataclasses
import typing

import pytest

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import RETIRED, CrossbarSpec, list_presets, load_spec
from cimnas.hardware.energy import estimate_arch

NUMBERS = ("energy_uj", "latency_us", "area_mm2", "crossbars")


def _numbers(spec: CrossbarSpec) -> list[float]:
    out = []
    for kw in (dict(precision="binary"), dict(precision="kbit", bits=8), dict(precision="float")):
        try:  # a binary model does not fit 2 bits per cell: that field then acts on the 8-bit model only
            r = estimate_arch("resnet20", spec, **kw)
        except CimnasError:
            out.append(None)
            continue
        out += [r[k] for k in NUMBERS] + list(r["energy_components_uj"].values())
    return out


def _other_value(f: dataclasses.Field, value):
    hint = typing.get_type_hints(CrossbarSpec)[f.name]
    if typing.get_origin(hint) is typing.Literal:
        return next(v for v in typing.get_args(hint) if v != value)
    if isinstance(value, bool):
        return not value
    if value is None:
        return 1e-4
    return value * 2


FIELDS = [f for f in dataclasses.fields(CrossbarSpec) if f.name not in ("name", "purpose")]


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_every_field_changes_energy_numbers_or_is_refused(f):
    base = load_spec("mnsim-default")
    new = _other_value(f, getattr(base, f.name))
    text = "null" if new is None else str(new).lower() if isinstance(new, bool) else str(new)
    try:
        spec = load_spec("mnsim-default", [f"hardware.{f.name}={text}"], uses=("energy",))
    except CimnasError as e:
        assert "\n" not in str(e) and (f.name in str(e) or "not modelled" in str(e))
        return
    assert _numbers(spec) != _numbers(base), f"hardware.{f.name}={text} changed no number and was not refused"


def test_adc_energy_area_follow_walden_fom():
    # Walden FOM: energy per conversion x 2 per bit; at the preset's own 6 bits the calibrated constant
    r = {b: estimate_arch("resnet20", load_spec("mnsim-default", [f"adc_bits={b}"])) for b in (2, 6, 10)}
    for b in (2, 10):
        adc = r[b]["energy_components_uj"]["adc"]
        assert adc == pytest.approx(r[6]["energy_components_uj"]["adc"] * 2.0 ** (b - 6))
    assert r[2]["area_mm2"] < r[6]["area_mm2"] < r[10]["area_mm2"]
    assert r[2]["latency_us"] < r[6]["latency_us"] < r[10]["latency_us"]
    spec = load_spec("mnsim-default")
    assert spec.adc_energy_pj == spec.energy_adc_pj and spec.adc_area_um2 == spec.area_adc_um2


def test_dac_bits_cost_per_conversion_grows():
    # 8-bit inputs through a 2-bit DAC: half the cycles (8 -> 4), each conversion 2x the 1-bit DAC (ISAAC table)
    one = estimate_arch("resnet20", load_spec("mnsim-default"), precision="kbit", bits=8)
    two = estimate_arch("resnet20", load_spec("mnsim-default", ["dac_bits=2"]), precision="kbit", bits=8)
    assert two["energy_components_uj"]["dac"] == pytest.approx(one["energy_components_uj"]["dac"])
    assert two["energy_components_uj"]["adc"] == pytest.approx(one["energy_components_uj"]["adc"] / 2)


@pytest.mark.parametrize("override", ["read_voltage_v=0.3", "g_max_s=2e-4", "energy_sense_amp_pj=1"])
def test_inert_on_mnsim_default_is_refused_with_reason(override):
    with pytest.raises(CimnasError, match="mnsim-default"):
        load_spec("mnsim-default", [override], uses=("energy",))


def test_read_voltage_acts_when_cell_energy_is_physics():
    a = load_spec("mnsim-default", ["energy_cell_read_pj=null"], uses=("energy",))
    b = load_spec("mnsim-default", ["energy_cell_read_pj=null", "read_voltage_v=0.3"], uses=("energy",))
    assert b.cell_read_pj == pytest.approx(4 * a.cell_read_pj)


def test_energy_only_fields_refused_for_accuracy_commands():
    with pytest.raises(CimnasError, match="energy_adc_pj changes only energy"):
        load_spec("mnsim-default", ["energy_adc_pj=3"], uses=("accuracy",))
    load_spec("mnsim-default", ["g_max_s=2e-4"], uses=("accuracy",))  # conductances act on accuracy


def test_retired_field_refused_with_hint():
    assert "columns_per_adc" in RETIRED
    with pytest.raises(CimnasError, match="adcs_per_crossbar"):
        load_spec("mnsim-default", ["columns_per_adc=8"])


def test_presets_known_and_say_their_purpose():
    assert {"mnsim-default", "mnsim-128", "hawis-tolerance"} <= set(list_presets())
    assert load_spec("hawis-tolerance").purpose.startswith("accuracy only")
    assert all(load_spec(n).purpose for n in list_presets())
    assert load_spec("mnsim-128").rows == 128


def test_energy_on_accuracy_only_preset_warns(capsys):
    from cimnas.cli import main

    assert main(["energy", "--preset", "hawis-tolerance"]) == 0
    assert "warning: preset hawis-tolerance is for accuracy only" in capsys.readouterr().err
    assert main(["energy"]) == 0
    assert "warning" not in capsys.readouterr().err
