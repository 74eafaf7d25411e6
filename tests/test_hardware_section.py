"""One `hardware` section with the same keys in every command: `preset` + any CrossbarSpec field (issue 24 point 4)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from cimnas.cli import main
from cimnas.config import from_dict
from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec, HardwareConfig, load_spec
from cimnas.pipelines.hawis.config import HawisConfig
from cimnas.pipelines.studies.headroom import HeadroomConfig
from cimnas.pipelines.train import TrainRunConfig
from cimnas.pipelines.uae.config import UAESearchConfig

ROOTS = [HawisConfig, UAESearchConfig, TrainRunConfig, HeadroomConfig]


def test_same_section_in_every_config():
    for root in ROOTS:
        field = {f.name: f for f in dataclasses.fields(root)}["hardware"]
        assert field.default_factory is HardwareConfig, root
    keys = {f.name for f in dataclasses.fields(HardwareConfig)}
    assert keys == {"preset", "overrides"} | {f.name for f in dataclasses.fields(CrossbarSpec)} - {"name", "purpose"}


@pytest.mark.parametrize("root", ROOTS, ids=[r.__name__ for r in ROOTS])
def test_hardware_rows_acts_in_every_config(root):
    cfg = from_dict(root, {"hardware": {"preset": "mnsim-128", "rows": 64, "adc_bits": "5"}})
    spec = cfg.hardware.spec()
    assert (spec.rows, spec.columns, spec.adc_bits) == (64, 128, 5)
    old = from_dict(root, {"hardware": {"overrides": ["rows=64"]}})  # the older list form is still read
    assert old.hardware.spec() == load_spec("mnsim-default", ["rows=64"])


def test_renamed_key_refused_with_hint():
    with pytest.raises(CimnasError, match="'search.hardware_preset' is now 'hardware.preset'"):
        from_dict(UAESearchConfig, {"search": {"hardware_preset": "mnsim-default"}})


def test_cli_set_hardware_field_equals_config_key(capsys):
    energies = []
    for key in ("hardware.rows=128", "spec.rows=128", "rows=256"):
        capsys.readouterr()
        assert main(["energy", "--set", key, "--json"]) == 0
        energies.append(json.loads(capsys.readouterr().out)["energy_uj"])
    assert energies[0] == energies[1] != energies[2]


def test_train_final_json_energy_uses_section(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "digits", "limit": 60, "test_limit": 20},
                                   "model": {"name": "mlp", "precision": "binary", "options": {"hidden_sizes": [8]}},
                                   "train": {"epochs": 1, "batch_size": 30, "progress": False},
                                   "hardware": {"preset": "mnsim-default", "rows": 64}}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 0
    final = json.loads((tmp_path / "r" / "final.json").read_text())
    capsys.readouterr()
    assert main(["energy", "--checkpoint", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["energy_uj"] == pytest.approx(final["energy_uj"], rel=1e-12)
