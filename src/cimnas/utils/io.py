"""Run-folder I/O: atomic writes, JSON / JSONL, checkpoints that load with weights_only=True."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cimnas.errors import CimnasError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a CimnasError."""
    path = Path(path)
    if not path.is_file():
        raise CimnasError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CimnasError(f"{path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); fix or delete it") from e


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and fsync it, so a killed process never loses a finished record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a torn last line (killed mid-write) is dropped, other bad lines are errors."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise CimnasError(f"{path} line {i + 1} is corrupt; fix or delete that line") from e
    return out


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Atomically save a checkpoint dict (tensors, numbers, strings, lists, dicts only)."""
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; missing or corrupt files raise a CimnasError."""
    path = Path(path)
    if not path.is_file():
        raise CimnasError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CimnasError(
            f"checkpoint {path} is corrupt or not a cimnas checkpoint ({type(e).__name__}); "
            "re-create it or point to another file"
        ) from e
    if not isinstance(obj, dict):
        raise CimnasError(f"checkpoint {path} does not hold a cimnas checkpoint dict")
    return obj
