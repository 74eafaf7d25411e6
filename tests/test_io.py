"""Run-folder I/O: atomic writes, torn JSONL lines, weights_only checkpoints."""

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.utils.io import append_jsonl, load_checkpoint, read_jsonl, save_checkpoint, write_json


def test_jsonl_drops_torn_last_line(tmp_path):
    p = tmp_path / "e.jsonl"
    append_jsonl(p, {"a": 1})
    append_jsonl(p, {"a": 2})
    with open(p, "a") as f:
        f.write('{"a": 3')  # killed mid-write
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]


def test_jsonl_corrupt_middle_line_is_an_error(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('{"a": 1}\nxx\n{"a": 2}\n')
    with pytest.raises(CimnasError, match="line 2"):
        read_jsonl(p)


def test_checkpoint_round_trip_and_corrupt(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"w": torch.arange(3), "meta": {"name": "x", "widths": [1, 2]}})
    ck = load_checkpoint(p)
    assert torch.equal(ck["w"], torch.arange(3)) and ck["meta"]["widths"] == [1, 2]
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(CimnasError, match="corrupt"):
        load_checkpoint(p)
    with pytest.raises(CimnasError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    write_json(p, {"v": 1})
    import cimnas.utils.io as io

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(CimnasError, match=r"cannot write .*r.json: No space left on device; free some disk space"):
        write_json(p, {"v": 2})
    assert p.read_text().strip().startswith("{") and '"v": 1' in p.read_text()
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]
