"""Issue 23, pattern 2: an output FILE (`--out`) is checked before anything is read or written.

Refused: a path that is an input of the same command or lies inside an input run folder, a folder, a FIFO, a
device, a link. Exit 2, one line, no traceback; the run folders, the path and every link target unchanged
(a device stays a device). `cio.check_output` is the one check; the atomic writer refuses the same things."""

from __future__ import annotations

import os
import stat

import pytest

from cimnas.cli import main
from cimnas.errors import CimnasError
from cimnas.utils import io as cio
from faultkit import char_device, main_refused, snapshot, uae_run


@pytest.fixture
def runs(tmp_path):
    return uae_run(tmp_path / "UE"), uae_run(tmp_path / "UE2")


@pytest.mark.parametrize("target, needle", [
    ("UE/final.json", "inside the input"),  # the case: the table over the run's own result
    ("UE/episodes.jsonl", "inside the input"),
    ("UE/run.json", "inside the input"),
    ("UE/table3.md", "inside the input"),  # a new file inside a run that is read
    ("UE2/figures/../final.json", "inside the input"),  # the second run, through `..`
    ("UE", "a folder"),
])
def test_report_out_inside_an_input_is_refused(runs, tmp_path, capsys, target, needle):
    ue, ue2 = runs
    before = snapshot(tmp_path)
    main_refused(capsys, "uae", "report", "--runs", ue, ue2, "--out", tmp_path / target, needles=("--out", needle))
    assert snapshot(tmp_path) == before


def test_report_out_as_a_link_fifo_or_device(runs, tmp_path, capsys):
    ue, ue2 = runs
    victim = tmp_path / "victim.md"
    victim.write_text("keep me\n")
    (tmp_path / "link.md").symlink_to(victim)
    os.mkfifo(tmp_path / "pipe.md")
    dev = char_device(tmp_path)
    for target, needle in ((tmp_path / "link.md", "symbolic link"), (tmp_path / "pipe.md", "FIFO"),
                           (dev, "character device")):
        before = snapshot(tmp_path)
        main_refused(capsys, "uae", "report", "--runs", ue, ue2, "--out", target, needles=(needle,))
        assert snapshot(tmp_path) == before
    assert stat.S_ISCHR(os.lstat(dev).st_mode)  # never replaced by a regular file
    assert victim.read_text() == "keep me\n"


def test_report_out_to_a_new_file_works(runs, tmp_path, capsys):
    ue, ue2 = runs
    assert main(["uae", "report", "--runs", str(ue), str(ue2), "--out", str(tmp_path / "table3.md")]) == 0
    assert "| tiny | 1 | mean | 81.00% |" in (tmp_path / "table3.md").read_text()


def test_robustness_out_folder_with_a_linked_output(tmp_path, capsys):
    out = tmp_path / "rob"
    out.mkdir()
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"\x89PNG keep")
    (out / "robustness.png").symlink_to(victim)
    before = snapshot(tmp_path)
    main_refused(capsys, "robustness", "--checkpoint", tmp_path / "never-read.pt", "--sweep", "--out", out,
                 "--device", "cpu", needles=("robustness.png", "symbolic link"))
    assert snapshot(tmp_path) == before


def test_robustness_out_folder_holding_the_checkpoint(tmp_path, capsys):
    """--out OUT with a checkpoint named OUT/robustness.json: the output would replace an input."""
    out = tmp_path / "rob"
    out.mkdir()
    ck = out / "robustness.png"
    ck.write_bytes(b"a checkpoint by an odd name")
    before = snapshot(tmp_path)
    main_refused(capsys, "robustness", "--checkpoint", ck, "--sweep", "--out", out, "--device", "cpu",
                 needles=("robustness.png", "is an input"))
    assert snapshot(tmp_path) == before


def test_check_output_directly(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "in.json").write_text("{}")
    (tmp_path / "ok.md").write_text("old")
    cases = {tmp_path / "dir": "a folder", tmp_path / "in.json": "is an input",
             char_device(tmp_path): "character device", tmp_path / "dir" / "x.md": "inside the input"}
    for path, needle in cases.items():
        with pytest.raises(CimnasError, match=needle):
            cio.check_output(path, inputs=[tmp_path / "in.json", tmp_path / "dir"])
    assert cio.check_output(tmp_path / "ok.md", inputs=[tmp_path / "in.json"]) == tmp_path / "ok.md"
    assert cio.check_output(tmp_path / "new.md") == tmp_path / "new.md"


def test_atomic_writer_never_replaces_a_device_or_folder(tmp_path):
    (tmp_path / "dir").mkdir()
    dev = char_device(tmp_path)
    for path, needle in ((tmp_path / "dir", "a folder"), (dev, "character device")):
        with pytest.raises(CimnasError, match=needle):
            cio.atomic_write_bytes(path, b"x")
    assert stat.S_ISCHR(os.lstat(dev).st_mode) and (tmp_path / "dir").is_dir()
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "dir").iterdir())
