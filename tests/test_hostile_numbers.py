"""Issue 23, pattern 4: numbers inside files are checked before they are used.

Result files (final.json, episodes.jsonl, headroom.json, metrics.jsonl ...): no NaN / Infinity, accuracies in
[0, 1], energies finite and >= 0, counters whole numbers (not booleans), widths positive integers; checkpoints:
every floating-point tensor finite. A file out of range is refused with one line naming it, before any figure or
table is written (exit 2, no traceback, the folders unchanged)."""

from __future__ import annotations

import json

import pytest
import torch

from cimnas.cli import main
from cimnas.errors import CimnasError
from cimnas.utils import io as cio
from faultkit import FINAL, finished_train, main_refused, snapshot, uae_run


@pytest.mark.parametrize("change, needle", [
    ({"clean_acc": 5}, "clean_acc = 5 is not an accuracy in [0, 1]"),  # the 500.00 %
    ({"clean_acc": -0.2}, "clean_acc"),
    ({"mean": 1.5}, "mean"),
    ({"p5": -7}, "p5"),
    ({"episodes": True}, "episodes = True is not a whole number"),
    ({"episodes": 2.5}, "episodes"),
    ({"k": -1}, "k = -1"),
    ({"search_time_h": -3.0}, "search_time_h"),
    ({"unique_children": "2"}, None),  # a string where a count goes: the layout check's business, not a number
])
def test_uae_final_json_out_of_range(tmp_path, capsys, change, needle):
    run = uae_run(tmp_path / "UE", final={**FINAL, **change})
    before = snapshot(tmp_path)
    if needle is None:
        assert main(["uae", "report", "--runs", str(run)]) == 0
        return
    main_refused(capsys, "uae", "report", "--runs", run, needles=("final.json", needle))
    assert snapshot(tmp_path) == before  # no figures/ drawn


@pytest.mark.parametrize("raw, needle", [
    ('{"clean_acc": NaN}', "non-finite number NaN"),
    ('{"clean_acc": Infinity}', "non-finite number Infinity"),
    ('{"clean_acc": -Infinity}', "non-finite"),
])
def test_non_finite_json_tokens(tmp_path, capsys, raw, needle):
    run = uae_run(tmp_path / "UE")
    (run / "final.json").write_text(raw)
    before = snapshot(tmp_path)
    main_refused(capsys, "uae", "report", "--runs", run, needles=("final.json", needle))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("record, needle", [
    ('{"episode": 1, "reward": NaN, "cache_hit": false, "clean_acc": 0.5}', "NaN"),
    ('{"episode": 1, "reward": 0.1, "cache_hit": false, "clean_acc": 2.0}', "clean_acc"),
    ('{"episode": 1, "reward": 0.1, "cache_hit": false, "clean_acc": 0.5, "noisy": {"mean": -1}}', "noisy.mean"),
    ('{"episode": 1, "reward": 0.1, "cache_hit": false, "clean_acc": 0.5, "energy_uj": -4}', "energy_uj"),
    ('{"episode": 1.5, "reward": 0.1, "cache_hit": false, "clean_acc": 0.5}', "episode"),
    ('{"episode": 1, "reward": "high", "cache_hit": false, "clean_acc": 0.5}', "reward"),
])
def test_uae_episodes_out_of_range_draw_nothing(tmp_path, capsys, record, needle):
    """The second run's log is bad: the first run's figures are not drawn either (every log checked first)."""
    good = uae_run(tmp_path / "UE")
    bad = uae_run(tmp_path / "UE2")
    (bad / "episodes.jsonl").write_text((bad / "episodes.jsonl").read_text() + record + "\n" + record + "\n")
    before = snapshot(tmp_path)
    main_refused(capsys, "uae", "report", "--runs", good, bad, needles=("episodes.jsonl", needle))
    assert snapshot(tmp_path) == before and not (good / "figures").exists()


def _hawis_run(folder, episodes):
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"format": "cimnas-run-v2", "kind": "hawis"}))
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    return folder


@pytest.mark.parametrize("bad, needle", [
    ({"widths": [16, 1e30]}, "widths[1]"),  # the widths of 1e30
    ({"widths": [16, 0]}, "widths[1]"),
    ({"widths": [16, True]}, "widths[1]"),
    ({"energy_uj": -2.0}, "energy_uj"),
    ({"accuracy": 250}, "accuracy"),
    ({"reward_accuracy": -7}, "reward_accuracy"),
])
def test_hawis_episodes_out_of_range(tmp_path, capsys, bad, needle):
    ep = {"episode": 1, "widths": [16, 16], "reward": 0.2, "accuracy": 0.8, "energy_uj": 1.5}
    run = _hawis_run(tmp_path / "H", [ep, {**ep, "episode": 2, **bad}])
    before = snapshot(tmp_path)
    main_refused(capsys, "hawis", "report", run, needles=("episodes.jsonl line 2", needle))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("row, needle", [
    ({"test_acc": {"mean": -7.0, "values": [-7.0]}}, "rows[0].test_acc"),  # the issue's -700.00 %
    ({"test_acc": {"mean": 0.5, "values": [250]}}, "rows[0].test_acc.values[0]"),
    ({"energy_uj": -1.0}, "rows[0].energy_uj"),
    ({"runs": [{"seed": True, "test_acc": 0.5}]}, "rows[0].runs[0].seed"),
])
def test_headroom_json_out_of_range(tmp_path, row, needle):
    path = tmp_path / "headroom.json"
    path.write_text(json.dumps({"rows": [{"label": "U-1x", "widths": [8, 8], **row}]}))
    with pytest.raises(CimnasError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        cio.read_json(path)


def test_in_range_records_read_back(tmp_path):
    rec = {"epoch": 3, "train_acc": 1.0, "val_acc": 0.0, "energy_uj": 0.0, "widths": [1, 2], "loss": -3.5,
           "noisy": {"n": 4, "mean": 0.5, "std": 0.0}, "test_acc_vs_uniform": {"diff": -0.3, "ci95": [-1, 1]},
           "energy_stats": {"spearman": -0.4}, "val_acc_missing": None}
    cio.write_json(tmp_path / "ok.json", rec)
    assert cio.read_json(tmp_path / "ok.json") == rec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return finished_train(tmp_path_factory.mktemp("numbers"))[1] / "checkpoints" / "checkpoint.pt"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_model_checkpoint_is_refused_where_it_is_read(trained, tmp_path, capsys, value):
    """`robustness` reads a model checkpoint: a NaN weight is the file's fault, named as such."""
    ck = torch.load(trained, weights_only=True)
    next(iter(ck["state_dict"].values())).view(-1)[0] = value
    path = tmp_path / "bad.pt"
    torch.save(ck, path)
    before = snapshot(tmp_path)
    line = main_refused(capsys, "robustness", "--checkpoint", path, "--trials", "1", "--device", "cpu",
                        needles=("bad.pt", "NaN or infinite", "not a training problem"))
    assert "learning rate" not in line
    assert snapshot(tmp_path) == before
