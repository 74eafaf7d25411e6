"""Progress everywhere (issue 24 point 7): `cimnas train` shows its epochs on a terminal, `uae table1` says its
dataset fallback on stderr as it happens."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

from cimnas.config import DataConfig
from cimnas.pipelines.uae.config import Table1Config
from cimnas.pipelines.uae.table1 import _load_small

ROOT = Path(__file__).resolve().parents[1]


def _run_on_pty(argv: list[str]) -> tuple[int, str]:
    """Run `python -m cimnas ...` with stderr on a pseudo-terminal; (exit code, what the terminal saw)."""
    master, slave = os.openpty()
    # a 120-column terminal: tqdm sizes its bar to the window (a fresh pty is 0 columns wide: no bar at all)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "cimnas", *argv], stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    proc.communicate()
    return proc.returncode, seen.decode(errors="replace")


def test_train_shows_epochs_on_a_terminal(tmp_path):
    rc, tty = _run_on_pty(["train", "--config", "configs/train/digits_binary.yaml", "--out", str(tmp_path / "r"),
                           "--set", "data.limit=60", "--set", "data.test_limit=30", "--set", "model.width_mult=0.25",
                           "--set", "train.epochs=2", "--set", "train.batch_size=30"])
    assert rc == 0, tty
    assert "epoch 1/2: loss" in tty and "epoch 2/2: loss" in tty  # the epoch lines
    assert "%|" in tty  # and the bar within each epoch (fit's, which HAWIS stage A and C share)


def test_table1_fallback_said_on_stderr(tmp_path, capsys):
    cfg = Table1Config(data=DataConfig(name="mnist", data_dir=str(tmp_path), limit=60, test_limit=30))
    splits, note = _load_small(cfg)
    err = capsys.readouterr().err
    assert note.startswith("digits") and "warning: mnist could not be loaded" in err and "digits instead" in err
