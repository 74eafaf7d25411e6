"""Issue 23, pattern 1: nothing in a run folder is opened through a symbolic link, a FIFO or a device.

A link (to a file outside, to a folder outside, to a device), a FIFO or a socket anywhere in the run folder is
refused before anything is written: exit 2, one line, no traceback, every file in and around the folder unchanged,
the links' targets included. The I/O helpers refuse the same things one by one (O_NOFOLLOW + lstat)."""

from __future__ import annotations

import os
import socket

import pytest

from cimnas.cli import main
from cimnas.errors import CimnasError
from cimnas.utils import io as cio
from faultkit import char_device, copy_run, finished_train, main_refused, snapshot


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch train run (made once) and its config."""
    return finished_train(tmp_path_factory.mktemp("links"))


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious data outside the run folder\n")
    return path


def _link(path, target):
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def test_lock_link_in_an_otherwise_empty_folder(finished, tmp_path, victim, capsys):
    cfg, _ = finished
    out = tmp_path / "R"
    out.mkdir()
    _link(out / ".lock", victim)
    before = snapshot(out, victim)
    for resume in ([], ["--resume"]):
        main_refused(capsys, "train", "--config", cfg, "--out", out, *resume, needles=(".lock", "symbolic link"))
    assert snapshot(out, victim) == before
    assert victim.read_text() == "precious data outside the run folder\n"


@pytest.mark.parametrize("name", ["run.log", "metrics.jsonl", "final.json", "config.yaml", "run.json", ".lock",
                                  "checkpoints/checkpoint.pt"])
def test_file_of_a_run_as_a_link_is_refused_on_resume(finished, tmp_path, victim, capsys, name):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    victim.write_bytes((run / name).read_bytes() if (run / name).is_file() else b"x")  # a plausible target
    _link(run / name, victim)
    before = snapshot(run, victim)
    main_refused(capsys, "train", "--config", cfg, "--out", run, "--set", "train.epochs=2", "--resume",
                 needles=(name.split("/")[-1], "symbolic link"))
    assert snapshot(run, victim) == before


def test_checkpoints_folder_as_a_link_to_a_folder_outside(finished, tmp_path, capsys):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    outside = tmp_path / "elsewhere"
    (run / "checkpoints").rename(outside)
    _link(run / "checkpoints", outside)
    before = snapshot(run, outside)
    main_refused(capsys, "train", "--config", cfg, "--out", run, "--set", "train.epochs=2", "--resume",
                 needles=("checkpoints", "symbolic link"))
    assert snapshot(run, outside) == before


def test_run_log_linked_to_a_device(finished, tmp_path, capsys):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    _link(run / "run.log", char_device(tmp_path))
    before = snapshot(run)
    main_refused(capsys, "train", "--config", cfg, "--out", run, "--set", "train.epochs=2", "--resume",
                 needles=("run.log",))
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["run.log", "metrics.jsonl", ".lock", "stray.fifo"])
def test_fifo_in_a_run_folder_is_refused_without_blocking(finished, tmp_path, capsys, name):
    cfg, src = finished
    run = copy_run(src, tmp_path / "run")
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    before = snapshot(run)
    main_refused(capsys, "train", "--config", cfg, "--out", run, "--set", "train.epochs=2", "--resume",
                 needles=(name, "FIFO"))
    assert snapshot(run) == before


def test_socket_in_an_empty_out_folder(finished, tmp_path, capsys):
    cfg, _ = finished
    out = tmp_path / "R"
    out.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(out / ".lock"))
        before = snapshot(out)
        main_refused(capsys, "train", "--config", cfg, "--out", out, needles=(".lock", "socket"))
        assert snapshot(out) == before
    finally:
        sock.close()


# ---------------------------------------------------------------------------- the helpers, one by one
def test_io_helpers_never_follow_a_link(tmp_path, victim):
    link = tmp_path / "link"
    link.symlink_to(victim)
    before = snapshot(tmp_path)
    for call in (lambda: cio.append_jsonl(link, {"a": 1}), lambda: cio.write_json(link, {"a": 1}),
                 lambda: cio.read_json(link), lambda: cio.read_jsonl(link), lambda: cio.repair_jsonl(link),
                 lambda: cio.load_checkpoint(link), lambda: cio.append_text(link, "x\n"),
                 lambda: cio.atomic_write_bytes(link, b"x")):
        with pytest.raises(CimnasError, match="symbolic link"):
            call()
    assert snapshot(tmp_path) == before


def test_io_helpers_refuse_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for call in (lambda: cio.read_json(fifo), lambda: cio.append_jsonl(fifo, {"a": 1}),
                 lambda: cio.load_checkpoint(fifo), lambda: cio.write_json(fifo, {}),
                 lambda: cio.open_regular(fifo, os.O_RDONLY)):
        with pytest.raises(CimnasError, match="FIFO"):
            call()
    assert cio.file_kind(os.lstat(fifo).st_mode) == "a FIFO (named pipe)"


def test_a_link_given_as_the_out_folder_itself_is_followed(finished, tmp_path):
    """The user asked for it explicitly: --out LINK (to an empty folder) is where the run goes."""
    cfg, _ = finished
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "alias")]) == 0
    assert (real / "final.json").is_file()
