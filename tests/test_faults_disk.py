"""Class 2 faults, the disk: torn logs, stale temporaries, unwritable / impossible --out paths, a full disk.

Each refusal: exit code 2, one line on stderr, no traceback, the run folder's files unchanged. Mostly through
`cimnas train` in a subprocess; the full disk is simulated in-process (os.fsync raising ENOSPC)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from cimnas.cli import main
from faultkit import assert_ok, assert_one_line, assert_refused, copy_run, folder_hash, tiny_config, train


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished 1-epoch tiny run (copied by each test that changes it)."""
    base = tmp_path_factory.mktemp("disk")
    cfg = tiny_config(base)
    assert_ok(train(cfg, base / "run"))
    return cfg, base / "run"


def epochs_of(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]  # every line parses


def test_torn_metrics_line_is_cut_on_resume(done_run, tmp_path):
    cfg, src = done_run
    run = copy_run(src, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "loss": 0.3')  # killed mid-append: no newline
    assert_ok(train(cfg, run, "--set", "train.epochs=2", resume=True))
    assert epochs_of(run) == [1, 2]  # the fragment was cut, not glued to the next record


def test_stale_checkpoint_tmp_is_cleaned_on_resume(done_run, tmp_path):
    cfg, src = done_run
    run = copy_run(src, tmp_path / "run")
    stale = run / "checkpoints" / ".checkpoint.pt.k3j2x9.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert_ok(train(cfg, run, resume=True))  # the finished run is reported again
    assert not stale.exists()
    assert epochs_of(run) == [1]


@pytest.mark.parametrize("where, needle", [
    ("under_file", "a file stands where a folder should be"),
    ("proc", "cannot create the run folder"),
    ("too_long", "the name is too long"),
])
def test_impossible_out_paths(done_run, tmp_path, where, needle):
    cfg, _ = done_run
    (tmp_path / "plain.txt").write_text("keep me")
    out = {"under_file": tmp_path / "plain.txt" / "run",  # NotADirectoryError
           "proc": "/proc/cimnas-run",  # procfs refuses new entries, even for root
           "too_long": tmp_path / ("x" * 300)}[where]  # ENAMETOOLONG (255 bytes per name)
    assert_refused(train(cfg, out), needle)
    assert (tmp_path / "plain.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["plain.txt"]  # nothing created beside it


def test_a_file_where_out_should_be(done_run, tmp_path):
    cfg, _ = done_run
    out = tmp_path / "out"
    out.write_bytes(b"\x89PNG not a folder")
    assert_refused(train(cfg, out), "is a file, not a run folder")
    assert_refused(train(cfg, out, resume=True), "is a file, not a run folder")
    assert out.read_bytes() == b"\x89PNG not a folder"


# ------------------------------------------------------------------ a full disk (in-process)
def _enospc_for(match):
    real = os.fsync

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if match(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    return fsync


def test_full_disk_at_start_changes_nothing(done_run, tmp_path, monkeypatch, capsys):
    cfg, src = done_run
    run = copy_run(src, tmp_path / "run")
    before = folder_hash(run)
    monkeypatch.setattr(os, "fsync", _enospc_for(lambda target: True))
    rc = main(["train", "--config", str(cfg), "--out", str(run), "--set", "train.epochs=2", "--resume"])
    assert_one_line(rc, capsys.readouterr().err, "No space left on device", "free some disk space")
    assert folder_hash(run) == before


def test_full_disk_while_checkpointing_keeps_the_old_checkpoint(done_run, tmp_path, monkeypatch, capsys):
    cfg, src = done_run
    run = copy_run(src, tmp_path / "run")
    ckpt = run / "checkpoints" / "checkpoint.pt"
    old = ckpt.read_bytes()
    monkeypatch.setattr(os, "fsync", _enospc_for(lambda t: "checkpoint.pt" in t and t.endswith(".tmp")))
    rc = main(["train", "--config", str(cfg), "--out", str(run), "--set", "train.epochs=2", "--resume"])
    line = assert_one_line(rc, capsys.readouterr().err, "No space left on device", "checkpoint.pt")
    assert str(ckpt) in line
    assert ckpt.read_bytes() == old  # the epoch-1 checkpoint is intact
    assert not list(run.rglob("*.tmp"))  # the half-written temporary is gone
    monkeypatch.undo()  # space freed: the resume goes on from epoch 1 (the stray epoch-2 line is dropped)
    assert main(["train", "--config", str(cfg), "--out", str(run), "--set", "train.epochs=2", "--resume"]) == 0
    assert epochs_of(run) == [1, 2]


def test_full_disk_while_logging_leaves_the_log_whole(done_run, tmp_path, monkeypatch, capsys):
    cfg, src = done_run
    run = copy_run(src, tmp_path / "run")
    log = (run / "metrics.jsonl").read_bytes()
    ckpt = (run / "checkpoints" / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(os, "fsync", _enospc_for(lambda t: t.endswith("metrics.jsonl")))
    rc = main(["train", "--config", str(cfg), "--out", str(run), "--set", "train.epochs=2", "--resume"])
    assert_one_line(rc, capsys.readouterr().err, "No space left on device", "metrics.jsonl")
    assert (run / "metrics.jsonl").read_bytes() == log  # no half line: the append was rolled back
    assert (run / "checkpoints" / "checkpoint.pt").read_bytes() == ckpt
