"""Class 5 faults, numbers: non-finite, negative, out-of-range and absurd values are refused before the run
folder exists; a training loss that turns non-finite stops the run with one line and keeps the last good
checkpoint.

The cases of the issue go through `cimnas train` in a subprocess; the further ranges run in-process (same
`cimnas.cli.main`, no interpreter start per case)."""

from __future__ import annotations

import json

import pytest
import torch.nn.functional as F

from cimnas.cli import main
from faultkit import assert_ok, assert_one_line, assert_refused, copy_run, folder_hash, tiny_config, train


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("numbers"))


@pytest.mark.parametrize("override, needles", [
    ("train.lr=inf", ["train.lr", "not a finite number"]),
    ("train.lr=.inf", ["train.lr", "not a finite number"]),  # YAML's own infinity
    ("train.lr=nan", ["train.lr", "not a finite number"]),
    ("train.lr=-1", ["lr must be in (0, 10]", "-1"]),
    ("model.width_mult=inf", ["model.width_mult", "not a finite number"]),
    ("train.reg_coef=inf", ["train.reg_coef", "not a finite number"]),
    ("data.search_fraction=2", ["search_fraction must be in (0, 1)"]),
    ("train.epochs=1e9", ["train.epochs", "integer"]),  # YAML 1.1 reads 1e9 as text
    ("train.epochs=1.0e+9", ["train.epochs=1000000000 is not a training budget"]),
])
def test_bad_number_is_refused_before_the_folder_exists(cfg, tmp_path, override, needles):
    out = tmp_path / "run"
    assert_refused(train(cfg, out, "--set", override), *needles)
    assert not out.exists()


@pytest.mark.parametrize("override, needle", [
    ("train.epochs=1.5", "expected an integer"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.epochs=-3", "epochs must be >= 0, got -3"),  # OptimConfig does not know its section name
    ("train.batch_size=0", "batch_size must be >= 1"),
    ("train.eval_batch_size=-1", "eval_batch_size must be >= 1"),
    ("train.momentum=1", "momentum must be in [0, 1)"),
    ("train.gamma=0", "gamma must be in (0, 1]"),
    ("train.weight_decay=-0.1", "weight_decay must be in [0, 1)"),
    ("train.max_batches=0", "max_batches must be >= 1"),
    ("train.milestones=[.inf]", "train.milestones[0]"),
    ("train.w0=1e+300", "w0 must be in [0, 10]"),
    ("data.limit=1", "data.limit must be >= 2"),
    ("data.test_limit=-5", "data.test_limit must be >= 2"),
    ("data.search_fraction=0", "search_fraction must be in (0, 1)"),
    ("model.width_mult=0", "width_mult must be in (0, 64]"),
    ("model.width_mult=1e+6", "width_mult must be in (0, 64]"),
    ("model.bits=0", "model.bits must be in 1..16"),
    ("model.thermometer_levels=100000", "thermometer_levels must be in 1..256"),
    ("model.widths=[16,0,16]", "positive"),
    ("seed=99999999999999999999999", "seed must be in 0 .. 2**63 - 1"),  # torch.manual_seed would overflow
    ("seed=-1", "seed must be in 0 .. 2**63 - 1"),
    ("data.seed=-1", "data.seed must be in 0 .. 2**63 - 1"),
    ("seed=1e400", "expected an integer"),
])
def test_out_of_range_number_in_process(cfg, tmp_path, capsys, override, needle):
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--out", str(out), "--set", override])
    assert_one_line(rc, capsys.readouterr().err, needle)
    assert not out.exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cfg, tmp_path, monkeypatch, capsys):
    """Epoch 1 trains normally; in epoch 2 the loss turns NaN (forced: a real divergence is not reliable at this
    size). The run stops with one line; checkpoint and metrics stay those of epoch 1; a resume continues."""
    assert_ok(train(cfg, tmp_path / "good"))
    run = copy_run(tmp_path / "good", tmp_path / "run")
    ckpt = (run / "checkpoints" / "checkpoint.pt").read_bytes()
    log = (run / "metrics.jsonl").read_bytes()
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda logits, y, **kw: real(logits, y, **kw) * float("nan"))
    rc = main(["train", "--config", str(cfg), "--out", str(run), "--set", "train.epochs=2", "--resume"])
    assert_one_line(rc, capsys.readouterr().err, "the training loss became nan in epoch 2", "last good checkpoint")
    assert (run / "checkpoints" / "checkpoint.pt").read_bytes() == ckpt
    assert (run / "metrics.jsonl").read_bytes() == log
    assert (run / "final.json").read_bytes() == (tmp_path / "good" / "final.json").read_bytes()
    monkeypatch.undo()
    assert main(["train", "--config", str(cfg), "--out", str(run), "--set", "train.epochs=2", "--resume"]) == 0
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_refused_resume_numbers_leave_the_run_alone(cfg, tmp_path):
    out = tmp_path / "run"
    assert_ok(train(cfg, out))
    before = folder_hash(out)
    assert_refused(train(cfg, out, "--set", "train.lr=nan", resume=True), "train.lr", "not a finite number")
    assert folder_hash(out) == before
