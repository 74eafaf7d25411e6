"""Run-folder I/O: atomic writes, JSON / JSONL, checkpoints that load with weights_only=True."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import stat
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from cimnas.errors import CimnasError, check
from cimnas.utils.numbers import check_finite_tensors, check_numbers  # noqa: F401 - readers use them from here

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
    require_regular(path, missing_ok=True)  # never replace a link, a device, a FIFO or a folder
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


# ---------------------------------------------------------------------------- no link, no special file
#: what a path that is not a regular file is, for the one-line refusal
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """'a symbolic link', 'a FIFO (named pipe)', ... of an `lstat` mode ('a regular file' for one)."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode) else
                "a special file")


def require_regular(path: str | Path, *, missing_ok: bool = False) -> bool:
    """Refuse (one line) a `path` that is not a regular file: a symbolic link (never followed: a run writes and
    reads only its own files), a folder, a FIFO, a device or a socket. Returns whether the file exists."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return False
        raise CimnasError(f"file not found: {path}") from None
    except OSError as e:
        raise os_error(path, e, "inspect") from e
    if not stat.S_ISREG(st.st_mode):
        raise CimnasError(f"{path} is {file_kind(st.st_mode)}, not a regular file; cimnas reads and writes only "
                          "regular files (links are never followed): replace it with the file itself or choose "
                          "another path")
    return True


def open_regular(path: str | Path, flags: int, mode: int = 0o644, doing: str = "open") -> int:
    """`os.open` of a regular file only: O_NOFOLLOW (a link is refused, never followed) and O_NONBLOCK (a FIFO
    cannot block the open), then `fstat` checks what was opened. Returns the file descriptor."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno in (40, 6):  # ELOOP: a symbolic link; ENXIO: a FIFO without a reader
            require_regular(path)
        raise os_error(path, e, doing) from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CimnasError(f"{path} is {file_kind(st.st_mode)}, not a regular file; cimnas reads and writes only "
                          "regular files: replace it with the file itself or choose another path")
    os.set_blocking(fd, True)
    return fd


def read_regular(path: str | Path, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of the regular file `path` (never through a link, FIFO or device; `limit`: refuse a larger
    file). A missing file is `file not found: PATH`."""
    if not require_regular(path, missing_ok=True):
        raise CimnasError(f"{what} not found: {path}")
    fd = open_regular(path, os.O_RDONLY, doing="read")
    with os.fdopen(fd, "rb") as f:
        if limit is not None:
            size = os.fstat(f.fileno()).st_size
            check(size <= limit, f"{path} is {size:,} bytes, over the {limit:,} bytes such a file can be; check "
                  "the path")
        with os_errors(path, "read"):
            return f.read()


def check_no_links(folder: str | Path) -> None:
    """Refuse a run folder that holds a symbolic link, a FIFO, a device or a socket anywhere below it (the folder
    itself may be a link the user gave): a run never reads or writes through one."""
    with os_errors(folder, "read the run folder"):
        for top, dirs, files in os.walk(folder, followlinks=False):
            for name in dirs + files:
                p = os.path.join(top, name)
                mode = os.lstat(p).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise CimnasError(f"{p} is {file_kind(mode)}; a run folder holds only regular files and folders "
                                      "(links are never followed): remove it or use a new --out folder")


def check_output(path: str | Path, inputs: Sequence[str | Path] = (), flag: str = "--out") -> Path:
    """Refuse an output FILE that is not a regular file (a folder, a link, a FIFO, a device), or that is one of
    the command's `inputs` or lies inside an input folder (it would overwrite what it reads). Returns the path."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise os_error(path, e, "inspect") from e
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise CimnasError(f"{flag} {path} is {file_kind(st.st_mode)}; give the path of a regular file to write")
    target = path.resolve()
    for src in inputs:
        src = Path(src).resolve()
        if target == src or src in target.parents:
            raise CimnasError(f"{flag} {path} is {'an input' if target == src else 'inside the input ' + str(src)} "
                              "of this command; write the output outside what the command reads")
    return path


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
    """Read a JSON file (a regular file, never through a link); a missing, corrupt or non-finite file, or one
    whose accuracies / energies / counters are out of range (`check_numbers`), is a one-line CimnasError."""
    path = Path(path)
    obj = _loads(read_regular(path), str(path))
    check_numbers(obj, str(path))
    return obj


class _NonFinite(ValueError):
    """NaN / Infinity in a JSON file (cimnas writes them as null, so such a number was put there by hand)."""


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


def _loads(data: bytes | str, where: str, line: str = "") -> Any:
    """Strict JSON: no NaN / Infinity; one-line errors naming `where`."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except _NonFinite as e:
        raise CimnasError(f"{where}{line} holds the non-finite number {e}; the file is damaged: fix or delete "
                          "it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CimnasError(f"{where}{line} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); fix or delete "
                          "it") from e
    except RecursionError:
        raise CimnasError(f"{where}{line} is nested too deeply to be a cimnas file; fix or delete it") from None


def repair_jsonl(path: str | Path) -> bool:
    """Truncate a JSONL file after its last complete line (a torn line from a crash or a full disk), so the
    next append starts on a fresh line. Returns True when something was cut."""
    path = Path(path)
    if not require_regular(path, missing_ok=True):
        return False
    fd = open_regular(path, os.O_RDWR, doing="repair")
    with os_errors(path, "repair"), os.fdopen(fd, "rb+") as f:
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
        fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "ab") as f:
            size = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(size)  # a full disk: leave the file as it was, not with half a line
                raise


def append_text(path: str | Path, text: str) -> None:
    """Append `text` to the regular file `path` (created if missing; never through a link or a FIFO)."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os_errors(path), os.fdopen(fd, "a") as f:
        f.write(text)


def require_run_kind(root: Path, kind: str, name: str, command: str) -> None:
    """Refuse a folder whose run.json is not of `kind` (a report on another run's folder would misread its files
    or write beside them): `{root} is not a {name} run folder (run.json kind ...); give the --out folder of ...`."""
    meta = read_json(root / "run.json") if require_regular(root / "run.json", missing_ok=True) else None
    found = meta.get("kind") if isinstance(meta, dict) else None
    if found != kind:
        raise CimnasError(f"{root} is not a {name} run folder (run.json kind {found!r}); give the --out folder of "
                          f"`{command}`")


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file (a regular file, never through a link); a torn last line (killed mid-write) is dropped,
    other bad lines, non-finite numbers and out-of-range values (`check_numbers`) are one-line errors."""
    path = Path(path)
    if not require_regular(path, missing_ok=True):
        return []
    try:
        lines = read_regular(path).decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CimnasError(f"{path} is not a text JSONL log; delete it or use another run folder") from e
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line, parse_constant=_no_constant)
        except (json.JSONDecodeError, RecursionError) as e:
            if i == len(lines) - 1 and isinstance(e, json.JSONDecodeError):
                break
            raise CimnasError(f"{path} line {i + 1} is corrupt; fix or delete that line") from e
        except _NonFinite as e:
            raise CimnasError(f"{path} line {i + 1} holds the non-finite number {e}; fix or delete that "
                              "line") from None
        if not isinstance(rec, dict):
            raise CimnasError(f"{path} line {i + 1} is not a JSON record; fix or delete that line")
        check_numbers(rec, f"{path} line {i + 1}")
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
    data = read_regular(path, "checkpoint")  # never through a link, a FIFO or a device
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / malicious files
        raise CimnasError(
            f"checkpoint {path} is corrupt or not a cimnas checkpoint ({type(e).__name__}); "
            "re-create it or point to another file"
        ) from e
    if not isinstance(obj, dict):
        raise CimnasError(f"checkpoint {path} does not hold a cimnas checkpoint dict")
    check_finite_tensors(obj, path)
    return obj


def _types(tp: type | tuple[type, ...]) -> tuple[type, ...]:
    return tp if isinstance(tp, tuple) else (tp,)


def require_fields(ckpt: dict, fields: dict[str, type | tuple[type, ...]], path: str | Path) -> dict:
    """Check that a loaded checkpoint has `fields` of the given types; a missing or mistyped one is a one-line
    error naming the field (a crafted or foreign checkpoint never reaches a traceback)."""
    for name, tp in fields.items():
        if name not in ckpt:
            raise CimnasError(f"checkpoint {path} has no {name!r}; it was not written by this cimnas step: "
                              "re-create it or point to another file")
        if not isinstance(ckpt[name], tp) or (isinstance(ckpt[name], bool) and bool not in _types(tp)):
            raise CimnasError(f"checkpoint {path}: {name!r} is a {type(ckpt[name]).__name__}, not a "
                              f"{getattr(tp, '__name__', tp)}; re-create it or point to another file")
    return ckpt
