"""scripts/study_state.py: finished runs travel (text files only), unfinished ones and checkpoints do not, and a
restore never overwrites a file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("study_state", Path(__file__).parents[1] / "scripts" / "study_state.py")
study_state = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(study_state)


def _tree(root: Path) -> None:
    for rel, text in {"s/run.json": "{}", "s/config.yaml": "a: 1", "s/run.log": "log",
                      "s/runs/U-1x/seed0/final.json": '{"test_acc": 0.8}', "s/runs/U-1x/seed0/config.yaml": "b: 2",
                      "s/runs/U-1x/seed0/metrics.jsonl": "{}\n", "s/runs/U-1x/seed0/checkpoints/last.pt": "x",
                      "s/runs/U-1x/seed1/config.yaml": "unfinished", "s/code-abc/src/final.json": "{}"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_save_restore_round_trip(tmp_path) -> None:
    _tree(tmp_path / "a")
    archive = tmp_path / "state.tar.gz"
    assert study_state.main(["save", str(archive), str(tmp_path / "a")]) == 0
    first = archive.read_bytes()
    assert study_state.main(["save", str(archive), str(tmp_path / "a")]) == 0 and archive.read_bytes() == first
    assert study_state.main(["restore", str(archive), str(tmp_path / "b")]) == 0
    got = sorted(str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert got == ["s/config.yaml", "s/run.json", "s/run.log", "s/runs/U-1x/seed0/config.yaml",
                   "s/runs/U-1x/seed0/final.json", "s/runs/U-1x/seed0/metrics.jsonl"]
    assert (tmp_path / "b/s/runs/U-1x/seed0/final.json").read_text() == '{"test_acc": 0.8}'
    # a second restore into the same folder is refused and changes nothing
    assert study_state.main(["restore", str(archive), str(tmp_path / "b")]) == 2
    assert study_state.main(["bogus"]) == 2
