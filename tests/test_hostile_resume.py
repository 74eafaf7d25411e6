"""Issue 23, pattern 3: validate, then write. A resume checks the config, run.json, every JSONL log, that the logs
can be appended to, and the checkpoint (model, optimiser and scheduler states against the live objects: kinds,
shapes, dtypes, finite values) before its first write; a refused resume leaves every file as it was.

Each case tampers with one thing of a finished one-epoch `cimnas train` run and resumes it to two epochs:
exit 2, one line, no traceback, the folder (config.yaml still at 1 epoch, run.json, run.log) unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from cimnas.cli import main
from faultkit import copy_run, finished_train, main_refused, snapshot

CKPT = "checkpoints/checkpoint.pt"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_train(tmp_path_factory.mktemp("resume"))


def _tamper_ckpt(run, change):
    ck = torch.load(run / CKPT, weights_only=True)
    change(ck)
    torch.save(ck, run / CKPT)


def _first_buffer(ck):
    return ck["optimizer"]["state"][0]["momentum_buffer"]


def _set(path, value):
    def change(ck):
        node = ck
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value(node[path[-1]]) if callable(value) else value
    return change


CHECKPOINT_CASES = {
    "nan momentum": (lambda ck: _first_buffer(ck).view(-1).__setitem__(0, float("nan")), "NaN or infinite"),
    "inf momentum": (lambda ck: _first_buffer(ck).view(-1).__setitem__(-1, float("inf")), "NaN or infinite"),
    "momentum of another shape": (_set(["optimizer", "state", 0, "momentum_buffer"], lambda t: t[:1]), "shape"),
    "momentum in float64": (_set(["optimizer", "state", 0, "momentum_buffer"], lambda t: t.double()), "float64"),
    "state of no parameter": (_set(["optimizer", "state", 99], {"momentum_buffer": torch.zeros(1)}),
                              "names no parameter"),
    "lr as text": (lambda ck: ck["optimizer"]["param_groups"][0].__setitem__("lr", "fast"), "param_groups[0].lr"),
    "scheduler epoch as text": (_set(["scheduler", "last_epoch"], "x"), "last_epoch"),
    "scheduler of two groups": (_set(["scheduler", "base_lrs"], [0.05, 0.05]), "base_lrs"),
    "scheduler nan gamma": (_set(["scheduler", "gamma"], float("nan")), "gamma"),
    "scheduler state not a mapping": (_set(["scheduler"], [1, 2]), "'scheduler' is a list"),
    "weights in float64": (lambda ck: ck["state_dict"].update({k: v.double() for k, v in ck["state_dict"].items()
                                                                if v.is_floating_point()}), "float64"),
    "nan weight": (lambda ck: next(iter(ck["state_dict"].values())).view(-1).__setitem__(0, float("nan")),
                   "NaN or infinite"),
    "epoch a boolean": (_set(["epoch"], True), "'epoch' is a bool"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_refused_checkpoint_leaves_the_folder_unchanged(finished, tmp_path, capsys, case):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    change, needle = CHECKPOINT_CASES[case]
    _tamper_ckpt(run, change)
    before = snapshot(run)
    line = main_refused(capsys, "train", "--config", cfg, "--out", run, "--set", "train.epochs=2", "--resume",
                        needles=("checkpoint", needle))
    assert "learning rate" not in line  # a damaged file is not a training problem
    assert snapshot(run) == before
    assert "epochs: 1" in (run / "config.yaml").read_text()


def _run_json(change):
    def apply(run):
        meta = json.loads((run / "run.json").read_text())
        change(meta)
        (run / "run.json").write_text(json.dumps(meta))
    return apply


def _metrics(text):
    def apply(run):
        (run / "metrics.jsonl").write_text(text + (run / "metrics.jsonl").read_text())
    return apply


FILE_CASES = {
    "executions a string": (_run_json(lambda m: m.update(executions="x")), "executions"),
    "executions of numbers": (_run_json(lambda m: m.update(executions=[1, 2])), "executions"),
    "run.json a list": (lambda run: (run / "run.json").write_text("[1, 2]"), "run description"),
    "run.json with NaN": (lambda run: (run / "run.json").write_text('{"format": NaN}'), "non-finite"),
    "metrics line corrupt": (_metrics('{"epoch": 0, "loss": \n'), "line 1 is corrupt"),
    "metrics accuracy 7": (_metrics('{"epoch": 0, "train_acc": 7}\n'), "train_acc"),
    "metrics epoch a boolean": (_metrics('{"epoch": true}\n'), "epoch"),
    "metrics not records": (_metrics("[1, 2]\n"), "not a JSON record"),
    "config.yaml duplicate key": (lambda run: (run / "config.yaml").write_text(
        (run / "config.yaml").read_text() + "seed: 1\n"), "duplicate key"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_refused_run_files_leave_the_folder_unchanged(finished, tmp_path, capsys, case):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    change, needle = FILE_CASES[case]
    change(run)
    (run / ".config.yaml.abc123.tmp").write_text("a temporary of a killed write")  # cleaned only by a first write
    before = snapshot(run)
    main_refused(capsys, "train", "--config", cfg, "--out", run, "--set", "train.epochs=2", "--resume",
                 needles=(needle,))
    assert snapshot(run) == before


def test_immutable_log_is_found_before_the_first_write(finished, tmp_path, capsys):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(run / "metrics.jsonl")],
                                        capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and a file system with it)")
    try:
        before = snapshot(run)
        main_refused(capsys, "train", "--config", cfg, "--out", run, "--set", "train.epochs=2", "--resume",
                     needles=("metrics.jsonl",))
        assert snapshot(run) == before
    finally:
        subprocess.run([chattr, "-i", str(run / "metrics.jsonl")], check=True)


def test_a_good_resume_still_extends_the_run(finished, tmp_path):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    (run / ".config.yaml.abc123.tmp").write_text("a temporary of a killed write")
    assert main(["train", "--config", str(cfg), "--out", str(run), "--set", "train.epochs=2", "--resume"]) == 0
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (run / ".config.yaml.abc123.tmp").exists()


@pytest.mark.parametrize("payload, needle", [
    ({"state": {"w": torch.tensor([1.0, float("nan")])}}, "NaN or infinite"),
    ({"opt": {"state": {0: {"exp_avg": torch.full((2,), float("inf"))}}}}, "NaN or infinite"),
    (None, "corrupt or not a cimnas checkpoint"),
])
def test_every_checkpoint_of_any_run_is_checked_on_open(tmp_path, payload, needle):
    """RunFolder.open(resume=True) loads every checkpoint in checkpoints/ before the pipeline writes anything, so
    a HAWIS super-net or a UAE controller state is refused as early as `cimnas train`'s checkpoint."""
    from cimnas.errors import CimnasError
    from cimnas.runs import RunFolder

    with RunFolder.open(tmp_path / "r", "hawis", {"seed": 0}) as run:
        run.save("supernet.pt", {"state": {"w": torch.ones(2)}})
        if payload is None:
            (run.ckpt / "supernet.pt").write_bytes(b"not a checkpoint")
        else:
            run.save("supernet.pt", payload)
    before = snapshot(tmp_path)
    with pytest.raises(CimnasError, match=needle):
        RunFolder.open(tmp_path / "r", "hawis", {"seed": 0}, resume=True)
    assert snapshot(tmp_path) == before
