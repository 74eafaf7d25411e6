"""`cimnas energy --checkpoint FILE|RUN_DIR` / `--arch final.json`: the energy of the model as trained equals the
pipeline's number (issue 24 point 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cimnas.cli import main
from cimnas.pipelines.hawis import load_hawis_config, run_pipeline

TINY = {
    "seed": 3, "device": "cpu",
    "data": {"name": "digits", "limit": 120, "test_limit": 40},
    "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
    "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
    "pretrain": {"epochs": 1, "batch_size": 40, "lr": 0.05, "max_batches": 1},
    "search": {"episodes": 2, "agent": "random",
               "env": {"batch_size": 40, "slimmable_epochs": 0.2, "candidate_epochs": 0.2, "bn_recal_batches": 1,
                       "lam": 0.2}},
    "retrain": {"epochs": 1, "batch_size": 40, "lr": 0.05, "milestones": [], "baselines": []},
    "defects": {"trials": 1},
    "hardware": {"preset": "mnsim-default", "overrides": ["rows=128"]},
}


@pytest.fixture(scope="module")
def hawis_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hawis")
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(TINY))
    run_pipeline(load_hawis_config(tmp / "cfg.yaml", []), tmp / "run")
    return tmp / "run"


def _energy(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["energy", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_checkpoint_energy_equals_pipeline(hawis_run, capsys):
    final = json.loads((hawis_run / "final.json").read_text())
    for where in (hawis_run, hawis_run / "checkpoints" / "final_model.pt"):
        out = _energy(capsys, "--checkpoint", str(where))
        assert out["energy_uj"] == pytest.approx(final["energy_uj"], rel=1e-12)
        assert out["crossbars"] == final["crossbars"]
    # the run's own hardware section (rows=128) is used; the default 256-row preset gives another number
    other = _energy(capsys, "--checkpoint", str(hawis_run), "--preset", "mnsim-default")
    assert other["energy_uj"] != pytest.approx(final["energy_uj"])


def test_thermometer_option_widens_first_layer(capsys):
    plain = _energy(capsys, "--model", "mlp", "--input-shape", "1x8x8")
    thermo = _energy(capsys, "--model", "mlp", "--input-shape", "1x8x8", "--thermometer", "4")
    assert thermo["layers"][0]["in_channels"] == 4 * plain["layers"][0]["in_channels"]
    assert thermo["energy_uj"] > plain["energy_uj"]


def test_train_run_dir_and_final_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "configs/train/digits_binary.yaml", "--out", str(out), "--set",
                 "data.limit=80", "--set", "data.test_limit=40", "--set", "model.width_mult=0.25", "--set",
                 "train.epochs=1", "--set", "train.batch_size=40", "--set", "train.progress=false"]) == 0
    by_dir = _energy(capsys, "--checkpoint", str(out))
    by_final = _energy(capsys, "--arch", str(out / "final.json"))
    assert by_dir["energy_uj"] == by_final["energy_uj"] > 0
    assert by_dir["layers"][0]["in_channels"] == 8  # thermometer: 1 channel x 8 levels, as trained


def test_checkpoint_with_describing_options_refused(hawis_run, capsys):
    assert main(["energy", "--checkpoint", str(hawis_run), "--bits", "8"]) == 2
    assert "fixed by" in capsys.readouterr().err
