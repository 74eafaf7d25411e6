"""`cimnas energy --checkpoint FILE|RUN_DIR` / `--arch final.json`: the energy of the model as trained equals the
pipeline's number (issue 24 point 2)."""

from __future__ import annotations

import json

from cimnas.cli import main


def _energy(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["energy", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


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
