"""Run-folder I/O: atomic writes, JSON / JSONL, checkpoints that load with weights_only=True."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cimnas.errors import CimnasError

TMP_SUFFIX = ".tmp"
#: format of every checkpoint cimnas writes (cimnas.nn.models.model_payload, cimnas.runs.RunFolder.save)
CHECKPOINT_FORMAT = "cimnas-checkpoint-v2"


def os_error(path: str | Path, e: OSError, doing: str = "write") -> CimnasError:
    """A one-line error for a failed file operation, naming the path and what to do."""
    hint = {28: "free some disk space", 30: "the file system is read-only: choose another --out",
            13: "no permission: choose a folder you can write", 36: "the name is too long: choose a shorter path",
            20: "a file stands where a folder should be: choose another path",
            21: "a folder stands where a file should be: choose another path",
            122: "the disk quota is exhausted: free some space"}.get(e.errno or 0, "check the path")
    return CimnasError(f"cannot {doing} {path}: {e.strerror or e}; {hint}")


@contextlib.contextmanager
def os_errors(path: str | Path, doing: str = "write") -> Iterator[None]:
    """Turn an OSError inside the block into a one-line CimnasError naming `path`."""
    try:
        yield
    except OSError as e:
        raise os_error(path, e, doing) from e


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half.

    A full disk or an unwritable folder is a one-line CimnasError; the old file is then untouched and the
    temporary file removed (a temporary left by a kill, `.NAME.*.tmp`, is removed by `clean_stale_tmp`)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise os_error(path, e) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def clean_stale_tmp(folder: str | Path) -> list[str]:
    """Remove temporary files of interrupted atomic writes (`.NAME.XXXX.tmp`) below `folder`."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.rglob(f".*{TMP_SUFFIX}"):
        if p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(str(p))
    return removed


def _finite_json(obj: Any) -> Any:
    """NaN / infinity as None: JSON has no such numbers (json.dumps would write invalid `NaN`)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_json(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (non-finite floats become null)."""
    return json.dumps(_finite_json(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    atomic_write_bytes(path, (dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a CimnasError."""
    path = Path(path)
    if not path.is_file():
        raise CimnasError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CimnasError(f"{path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); fix or delete it") from e


def repair_jsonl(path: str | Path) -> bool:
    """Truncate a JSONL file after its last complete line (a torn line from a crash or a full disk), so the
    next append starts on a fresh line. Returns True when something was cut."""
    path = Path(path)
    if not path.is_file():
        return False
    with os_errors(path, "repair"), open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and fsync it, so a killed process never loses a finished record; a torn last
    line left by an earlier crash is cut first (never glued to the new record)."""
    path = Path(path)
    line = (dumps(record) + "\n").encode()
    with os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(path)
        with open(path, "ab") as f:
            size = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(size)  # a full disk: leave the file as it was, not with half a line
                raise


def require_run_kind(root: Path, kind: str, name: str, command: str) -> None:
    """Refuse a folder whose run.json is not of `kind` (a report on another run's folder would misread its files
    or write beside them): `{root} is not a {name} run folder (run.json kind ...); give the --out folder of ...`."""
    meta = read_json(root / "run.json") if (root / "run.json").is_file() else None
    found = meta.get("kind") if isinstance(meta, dict) else None
    if found != kind:
        raise CimnasError(f"{root} is not a {name} run folder (run.json kind {found!r}); give the --out folder of "
                          f"`{command}`")


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a torn last line (killed mid-write) is dropped, other bad lines are errors."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CimnasError(f"{path} is not a text JSONL log; delete it or use another run folder") from e
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise CimnasError(f"{path} line {i + 1} is corrupt; fix or delete that line") from e
        if not isinstance(rec, dict):
            raise CimnasError(f"{path} line {i + 1} is not a JSON record; fix or delete that line")
        out.append(rec)
    return out


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Atomically save a checkpoint dict (tensors, numbers, strings, lists, dicts only)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `weights_only=True` (no code in the file ever runs); missing, corrupt or foreign
    files raise a one-line CimnasError (torch's own warnings about the file are not printed)."""
    path = Path(path)
    if not path.is_file():
        raise CimnasError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / malicious files
        raise CimnasError(
            f"checkpoint {path} is corrupt or not a cimnas checkpoint ({type(e).__name__}); "
            "re-create it or point to another file"
        ) from e
    if not isinstance(obj, dict):
        raise CimnasError(f"checkpoint {path} does not hold a cimnas checkpoint dict")
    return obj


def require_fields(ckpt: dict, fields: dict[str, type | tuple[type, ...]], path: str | Path) -> dict:
    """Check that a loaded checkpoint has `fields` of the given types; a missing or mistyped one is a one-line
    error naming the field (a crafted or foreign checkpoint never reaches a traceback)."""
    for name, tp in fields.items():
        if name not in ckpt:
            raise CimnasError(f"checkpoint {path} has no {name!r}; it was not written by this cimnas step: "
                              "re-create it or point to another file")
        if not isinstance(ckpt[name], tp):
            raise CimnasError(f"checkpoint {path}: {name!r} is a {type(ckpt[name]).__name__}, not a "
                              f"{getattr(tp, '__name__', tp)}; re-create it or point to another file")
    return ckpt
