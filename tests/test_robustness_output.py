"""`cimnas robustness` output: labels from the run folders, a clean-accuracy column, a warning when no defect is
set (issue 24 point 9)."""

from __future__ import annotations

import json

import pytest
import yaml

from cimnas.cli import main
from cimnas.commands.robustness import default_labels


def test_default_labels_are_run_folders_and_unique():
    assert default_labels(["runs/u1x/checkpoints/checkpoint.pt", "runs/u3x/checkpoints/checkpoint.pt"]) == \
        ["u1x", "u3x"]
    assert default_labels(["r/a/checkpoints/final_model.pt", "r/a/checkpoints/checkpoint.pt"]) == \
        ["a/final_model", "a/checkpoint"]
    assert default_labels(["x/m.pt"]) == ["x"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rob")
    cfg = tmp / "t.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "digits", "limit": 60, "test_limit": 30},
                                   "model": {"name": "mlp", "precision": "binary", "options": {"hidden_sizes": [8]}},
                                   "train": {"epochs": 1, "batch_size": 30, "progress": False}}))
    for name in ("small", "other"):
        assert main(["train", "--config", str(cfg), "--out", str(tmp / name)]) == 0
    return [str(tmp / n / "checkpoints" / "checkpoint.pt") for n in ("small", "other")]


def test_labels_clean_column_and_no_defect_warning(two_runs, capsys):
    capsys.readouterr()
    assert main(["robustness", "--checkpoint", two_runs[0], "--checkpoint", two_runs[1], "--trials", "2",
                 "--json"]) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert set(res["models"]) == {"small", "other"}
    for r in res["models"].values():
        assert r["clean"] == r["mean"] == r["min"]  # no defect: every trial is the clean evaluation
    assert "warning: no defect set" in out.err


def test_table_has_clean_column(two_runs, capsys):
    capsys.readouterr()
    assert main(["robustness", "--checkpoint", two_runs[0], "--sa1-rate", "0.3", "--trials", "2"]) == 0
    out = capsys.readouterr()
    assert "clean %" in out.out and "small" in out.out and "warning" not in out.err
