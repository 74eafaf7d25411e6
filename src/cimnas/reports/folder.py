"""A run or study folder opened for reading only: its kind, whether a process is still writing it, and readers that
note what they could not read instead of stopping (the HTML report and `cimnas show` show what they can).

Nothing here writes into the folder: the lock is probed with a shared, non-blocking flock on a read-only
descriptor (never created), JSONL logs are read without the torn-line repair the writers do, and no figure is
regenerated. Imports no model, search or pipeline code (DESIGN.md: reports read run folders only).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cimnas.config import safe_yaml
from cimnas.errors import CimnasError
from cimnas.utils.io import open_regular, read_json, read_jsonl, read_regular

#: run.json kinds the report knows how to lay out (others get the generic page: results, tables, figures)
KIND_NAMES = {"hawis": "HAWIS run", "uae-search": "UAE search run", "train": "training run",
              "study-headroom": "headroom study", "hawis-study": "HAWIS study", "uae-study": "UAE study",
              "uae-analysis": "UAE analysis run", "uae-table1": "UAE Table 1 run",
              "hawis-rank-check": "HAWIS rank check", "study-hawis-aligned": "aligned-HAWIS study"}
LOCK_NAME = ".lock"  # cimnas.runs.LOCK_NAME (not imported: runs.py pulls in torch)


def lock_held(root: Path) -> bool:
    """True when a process holds the run folder's lock (flock, cimnas.runs): the run is still being written."""
    path = root / LOCK_NAME
    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@dataclass
class Folder:
    """One folder given to the report. `problems`: one line each for what could not be read or shown."""

    path: Path
    kind: str | None = None
    meta: dict = field(default_factory=dict)
    in_progress: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind or "", f"{self.kind} run" if self.kind else "folder")

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.path}: {text}")

    def json(self, name: str, typ: type = dict) -> Any:
        """`name` read as JSON of type `typ`; None (and a noted problem unless simply missing) otherwise."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            obj = read_json(path)
        except (CimnasError, OSError) as e:
            self.problem(f"{name} could not be read ({_short(e)}); what depends on it is not shown")
            return None
        if not isinstance(obj, typ):
            self.problem(f"{name} holds a {type(obj).__name__}, not a {typ.__name__}; not shown")
            return None
        return obj

    def jsonl(self, name: str) -> list[dict]:
        """The records of log `name`; a torn last line (a run killed or still writing) is noted and left out, a
        corrupt line elsewhere drops the log (noted)."""
        path = self.path / name
        if not path.is_file():
            return []
        try:
            data = read_regular(path)  # never through a link, a FIFO or a device (cimnas.utils.io)
            records = read_jsonl(path)
        except (CimnasError, OSError) as e:
            self.problem(f"{name} could not be read ({_short(e)}); its curves are not shown")
            return []
        if data and not data.endswith(b"\n"):
            self.problem(f"{name} ends in a torn line (the run was killed mid-write or is still writing); the "
                         f"{len(records)} complete records are shown")
        return records

    def text(self, name: str, limit: int = 200_000) -> str | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            with os.fdopen(open_regular(path, os.O_RDONLY, doing="read"), "rb") as f:
                return f.read(limit).decode("utf-8", errors="replace")
        except (CimnasError, OSError) as e:
            self.problem(f"{name} could not be read ({_short(e)})")
            return None

    def config(self) -> dict | None:
        text = self.text("config.yaml")
        if text is None:
            return None
        try:
            data = safe_yaml(text, str(self.path / "config.yaml"))
        except CimnasError as e:
            self.problem(f"config.yaml could not be read ({_short(e)})")
            return None
        return data if isinstance(data, dict) else None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def open_folder(path: str | Path) -> Folder:
    """Inspect `path` (reads run.json, probes the lock); a folder that is not a run is returned with a problem."""
    f = Folder(Path(path))
    if not f.path.is_dir():
        f.problem("not a folder; nothing shown")
        return f
    meta = f.json("run.json")
    if meta is None:
        if not f.problems:
            f.problem("not a cimnas run or study folder (no run.json); nothing shown")
        return f
    f.meta = meta
    f.kind = meta.get("kind") if isinstance(meta.get("kind"), str) else None
    if f.kind is None:
        f.problem("run.json names no kind of run; shown as a generic folder")
    f.in_progress = lock_held(f.path)
    if f.in_progress:
        f.problem("a cimnas process is still writing this folder (its lock is held): what was written so far "
                  "is shown")
    return f
