"""Helpers of the hostile-input / fault tests (tests/test_faults_*.py): drive `python -m cimnas` in a subprocess
with a tiny config, and check the refusal contract: exit code 2, one line on stderr, no traceback, and every file
already in the run folder byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: A run of a few seconds: float MLP on 200 digits, 1 epoch (the subprocess start is most of it).
TINY_TRAIN = """\
seed: 0
data: {name: digits, limit: 200, test_limit: 100}
model: {name: mlp, precision: float}
train: {epochs: 1, batch_size: 50, lr: 0.05, progress: false}
"""


def tiny_config(folder: Path, text: str = TINY_TRAIN, name: str = "tiny.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(text)
    return path


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m cimnas ARGS` from the repository root, one intra-op thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "cimnas", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def train(config: Path, out: Path, *extra: str, resume: bool = False) -> subprocess.CompletedProcess:
    return cli("train", "--config", config, "--out", out, *extra, *(["--resume"] if resume else []))


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-2000:]


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, exactly one line on stderr (`cimnas: error: ...`) holding every needle, no traceback."""
    return assert_one_line(proc.returncode, proc.stderr, *needles)


def assert_one_line(rc: int, err: str, *needles: str) -> str:
    assert rc == 2, (rc, err[-2000:])
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cimnas: error:"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def folder_hash(root: Path) -> dict[str, str]:
    """sha256 of every file below `root` (the `.lock` file, which holds the last opener's pid, excluded)."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def snapshot(*roots: Path) -> dict[str, object]:
    """What `roots` hold, walked without following links: every regular file's sha256 (the `.lock` file, which
    holds the last opener's pid, excluded), every link's target and the sha256 of what it points to (so a
    write through a link shows), every other entry's kind (FIFO, device). A root that does not exist: None."""
    out: dict[str, object] = {}
    for root in map(Path, roots):
        if not os.path.lexists(root):
            out[str(root)] = None
            continue
        entries = [root] if not root.is_dir() or root.is_symlink() else [root, *sorted(root.rglob("*"))]
        for p in entries:
            if p.is_symlink():
                target = Path(os.readlink(p))
                target = target if target.is_absolute() else p.parent / target
                data = hashlib.sha256(target.read_bytes()).hexdigest() if target.is_file() else None
                out[str(p)] = ("link", str(target), data)
            elif p.is_file() and p.name != ".lock":
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif not p.is_file() and not p.is_dir():
                out[str(p)] = ("special", p.lstat().st_mode)
    return out


def main_refused(capsys, *argv: str | Path, needles: tuple[str, ...] = ()) -> str:
    """`cimnas ARGV` in this process (`cimnas.cli.main`): exit 2, one line on stderr holding `needles`, no
    traceback; returns the line."""
    from cimnas.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    return assert_one_line(rc, capsys.readouterr().err, *needles)


FINAL = {"label": "tiny", "k": 1, "statistic": "mean", "clean_acc": 0.81, "mean": 0.78, "p5": 0.74,
         "search_time_h": 0.01, "episodes": 2, "unique_children": 2, "mc_samples": 4}


def uae_run(folder, final=None, episodes=None):
    """A `uae search` run folder as the reports read it (made by hand): run.json, final.json, episodes.jsonl."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"format": "cimnas-run-v2", "kind": "uae-search"}))
    (folder / "final.json").write_text(json.dumps(final or FINAL))
    recs = episodes or [{"episode": i, "reward": 0.5 + 0.1 * i, "cache_hit": False, "clean_acc": 0.6 + 0.1 * i,
                         "noisy": {"n": 2, "mean": 0.55 + 0.1 * i}} for i in (1, 2)]
    (folder / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder


def finished_train(base: Path) -> tuple[Path, Path]:
    """A finished one-epoch `cimnas train` run of TINY_TRAIN made in this process under `base`: (config, folder)."""
    from cimnas.cli import main

    cfg = tiny_config(base)
    assert main(["train", "--config", str(cfg), "--out", str(base / "run")]) == 0
    return cfg, base / "run"


def char_device(folder: Path) -> Path:
    """A character device of this test's own (a twin of /dev/zero made with mknod in `folder`), so a check that
    failed would replace it and never the machine's /dev/null; skips where mknod is not allowed."""
    import stat

    import pytest

    path = Path(folder) / "chardev"
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here ({e})")
    return path
