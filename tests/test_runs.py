"""RunFolder: lock, refusal rules, resume rules, torn-line repair, stale temporaries, checkpoint field checks."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch

from cimnas.config import OptimConfig
from cimnas.errors import CimnasError
from cimnas.runs import RunFolder, load_payload
from cimnas.utils.io import append_jsonl, read_jsonl, repair_jsonl


def _hold_lock(root: str, ready, release) -> None:
    run = RunFolder.open(root, "train", OptimConfig())
    ready.set()
    release.wait(20)
    run.close()


def test_second_writer_refused_and_lock_released_on_exit(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path / "r"), ready, release))
    p.start()
    assert ready.wait(20)
    with pytest.raises(CimnasError, match="in use by another cimnas process"):
        RunFolder.open(tmp_path / "r", "train", OptimConfig(), resume=True)
    release.set()
    p.join(20)
    RunFolder.open(tmp_path / "r", "train", OptimConfig(), resume=True).close()


def test_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path / "r"), ready, release))
    p.start()
    assert ready.wait(20)
    p.kill()
    p.join(20)
    RunFolder.open(tmp_path / "r", "train", OptimConfig(), resume=True).close()


def test_refusals(tmp_path: Path) -> None:
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(CimnasError, match="not a cimnas run"):
        RunFolder.open(tmp_path / "foreign", "train", OptimConfig(), resume=True)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CimnasError, match="is a file"):
        RunFolder.open(tmp_path / "afile", "train", OptimConfig())
    RunFolder.open(tmp_path / "run", "hawis", OptimConfig()).close()
    with pytest.raises(CimnasError, match="already holds a hawis run"):
        RunFolder.open(tmp_path / "run", "hawis", OptimConfig())
    with pytest.raises(CimnasError, match="holds a 'hawis' run"):
        RunFolder.open(tmp_path / "run", "train", OptimConfig(), resume=True)
    old = tmp_path / "v1"
    old.mkdir()
    (old / "config.yaml").write_text("a: 1\n")
    with pytest.raises(CimnasError, match="run format v1"):
        RunFolder.open(old, "train", OptimConfig(), resume=True)


def test_resume_rules(tmp_path: Path) -> None:
    RunFolder.open(tmp_path / "r", "train", {"train": {"epochs": 2, "lr": 0.1}}).close()
    with pytest.raises(CimnasError, match="train.lr"):
        RunFolder.open(tmp_path / "r", "train", {"train": {"epochs": 2, "lr": 0.2}}, resume=True,
                       resumable=["train.epochs"])
    run = RunFolder.open(tmp_path / "r", "train", {"train": {"epochs": 5, "lr": 0.1}}, resume=True,
                         resumable=["train.epochs"])
    assert run.resumed
    with pytest.raises(CimnasError, match="never rewrite its history"):
        run.check_extends("train.epochs", 1, 2)
    run.check_extends("train.epochs", 5, 2)
    run.close()
    # a whole section admitted by prefix
    RunFolder.open(tmp_path / "r", "train", {"train": {"epochs": 9, "lr": 0.3}}, resume=True,
                   resumable=["train."]).close()
    # --resume on an empty or missing folder starts fresh
    fresh = RunFolder.open(tmp_path / "new", "train", {"a": 1}, resume=True)
    assert not fresh.resumed and fresh.has("config.yaml") and fresh.has("run.json")
    fresh.close()


def test_torn_line_is_cut_before_append(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"epoch": 1})
    with open(path, "a") as f:
        f.write('{"epoch": 2, "lo')  # killed mid-write
    assert read_jsonl(path) == [{"epoch": 1}]
    append_jsonl(path, {"epoch": 2})
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    assert path.read_text().count("\n") == 2
    assert not repair_jsonl(path)


def test_stale_tmp_cleaned_on_resume(tmp_path: Path) -> None:
    RunFolder.open(tmp_path / "r", "train", {"a": 1}).close()
    stale = tmp_path / "r" / "checkpoints" / ".last.pt.abcd.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    with RunFolder.open(tmp_path / "r", "train", {"a": 1}, resume=True) as run:
        assert stale.exists()  # validate-then-write: opening (every check of the resume) removes nothing
        run.log("resumed", echo=False)  # the first write cleans up
    assert not stale.exists()


def test_checkpoint_fields_checked(tmp_path: Path) -> None:
    run = RunFolder.open(tmp_path / "r", "train", {"a": 1})
    run.save("c.pt", {"state_dict": {"w": torch.zeros(2)}, "epoch": 3})
    assert run.load("c.pt", {"state_dict": dict, "epoch": int})["epoch"] == 3
    run.save("bad.pt", {"state_dict": [1, 2], "epoch": 3})
    with pytest.raises(CimnasError, match="'state_dict' is a list"):
        run.load("bad.pt", {"state_dict": dict})
    with pytest.raises(CimnasError, match="has no 'optimizer'"):
        run.load("c.pt", {"optimizer": dict})
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    with pytest.raises(CimnasError, match="format"):
        load_payload(tmp_path / "foreign.pt")
    run.close()


def test_disk_full_is_one_line_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cimnas.utils import io

    run = RunFolder.open(tmp_path / "r", "train", {"a": 1})
    run.write_result("final.json", {"acc": 0.5})
    before = (tmp_path / "r" / "final.json").read_bytes()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(CimnasError, match="No space left on device; free some disk space"):
        run.write_result("final.json", {"acc": 0.9})
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    assert (tmp_path / "r" / "final.json").read_bytes() == before
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]
    run.close()
