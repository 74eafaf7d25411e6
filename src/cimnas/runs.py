"""The run folder: one per experiment, one writer at a time, nothing already on disk ever lost.

Layout (every command)::

    run.json         format version, kind of run (train, hawis, uae-search, ...), how it ran (workers, world size)
    config.yaml      the resolved config (what a resume compares against)
    run.log          the log (also printed)
    *.jsonl          append-only logs (one record per finished epoch / episode / task)
    checkpoints/     atomic checkpoints
    *.json           results;  figures/  PNGs
    .lock            held (flock) by the process writing the folder

Rules (docs/guarantees.md):
- `RunFolder.open(...)` takes an exclusive lock for the life of the run (the operating system releases it when
  the process dies, so a kill leaves no stale lock) and refuses a second writer with a one-line error.
- A folder that holds anything but a cimnas run of the same kind is refused; so is an existing run unless
  `resume=True`. `--resume` on an empty or missing folder starts a fresh run (every command alike).
- On resume the stored config must equal the given one except for the keys the pipeline declares resumable;
  `check_extends` lets a pipeline refuse a change that would rewrite history (fewer epochs than already done).
- Before anything else the folder is checked for writability, and the temporary files of interrupted atomic
  writes are removed; JSONL logs are repaired (torn last line cut) before each append.
"""

from __future__ import annotations

import fcntl
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from cimnas.config import diff_configs, from_dict, migrate_renamed, safe_yaml, to_dict
from cimnas.errors import CimnasError, check
from cimnas.utils import tensorboard
from cimnas.utils.io import (
    CHECKPOINT_FORMAT,
    append_jsonl,
    atomic_write_bytes,
    clean_stale_tmp,
    dumps,
    load_checkpoint,
    os_error,
    os_errors,
    read_json,
    read_jsonl,
    repair_jsonl,
    require_fields,
    save_checkpoint,
    write_json,
)

RUN_FORMAT = "cimnas-run-v2"
LOCK_NAME = ".lock"
T = TypeVar("T")


@dataclass
class RunFolder:
    """An open run folder. Build it with `RunFolder.open`; `close()` (or the end of the process) unlocks it."""

    root: Path
    kind: str
    resumed: bool = False
    _lock_fd: int | None = None
    _tb: Any = None  # TensorBoard writer when the config says `tensorboard: true` (cimnas.utils.tensorboard)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, root: str | Path, kind: str, config: Any, *, resume: bool = False,
             resumable: Sequence[str] = (), config_cls: type | None = None) -> RunFolder:
        """Create (or, with `resume`, reopen) the run folder `root` for a run of `kind` with `config`.

        `config` is a config dataclass (or a plain dict); `resumable` lists dotted keys that may differ on resume
        (a prefix ending in '.' admits a whole section); `config_cls` reads the stored config through the
        dataclasses first, so keys added by a later version (with their defaults) are not differences.
        """
        root = Path(root)
        cfg_dict = to_dict(config) if not isinstance(config, dict) else config
        writer = tensorboard.writer_class() if cfg_dict.get("tensorboard") is True else None  # before any write
        with os_errors(root, "open the run folder"):  # exists() raises for a name too long
            is_file = root.exists() and not root.is_dir()
        if is_file:
            raise CimnasError(f"{root} is a file, not a run folder: give a folder path for --out")
        if root.is_dir():  # refuse a foreign folder before anything (the lock file) is written into it
            _check_not_foreign(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(root, e, "create the run folder") from e
        run = cls(root, kind)
        run._lock()
        try:
            run._check_writable()
            run._adopt(cfg_dict, resume, resumable, config_cls)
            if writer is not None:
                run._tb = writer(str(root / "tensorboard"))
        except BaseException:
            run.close()
            raise
        return run

    def _lock(self) -> None:
        path = self.root / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise os_error(path, e, "create the lock file") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CimnasError(f"{self.root} is in use by another cimnas process (pid {holder}); wait for it to "
                              "finish or choose another --out folder") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (the process ending does the same); close the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_writable(self) -> None:
        probe = self.root / f".write-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"x")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            if probe.exists():
                probe.unlink()
            raise os_error(self.root, e, "write into the run folder") from e

    def _adopt(self, cfg_dict: dict, resume: bool, resumable: Sequence[str], config_cls: type | None) -> None:
        meta_path = self.root / "run.json"
        if not _check_not_foreign(self.root):
            self._start(cfg_dict)
            return
        meta = read_json(meta_path)
        check(isinstance(meta, dict) and meta.get("format") == RUN_FORMAT,
              f"{meta_path} is not a {RUN_FORMAT} run description; start a new --out folder")
        if meta.get("kind") != self.kind:
            raise CimnasError(f"{self.root} holds a {meta.get('kind')!r} run, not a {self.kind!r} run; "
                              "choose another --out folder")
        if not resume:
            raise CimnasError(f"{self.root} already holds a {self.kind} run; pass --resume to continue it or "
                              "choose a new --out folder")
        clean_stale_tmp(self.root)
        old = self.stored_config(config_cls)
        diff = [k for k in diff_configs(old, cfg_dict) if not _admitted(k, resumable)]
        if diff:
            raise CimnasError(f"cannot resume {self.root}: the config differs from the saved run at "
                              f"{', '.join(diff)}; resume with the original config or use a new --out folder")
        self.resumed = True

    def _start(self, cfg_dict: dict) -> None:
        write_json(self.root / "run.json", {"format": RUN_FORMAT, "kind": self.kind,
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            "host": platform.node(), "torch": torch.__version__})
        self.write_config(cfg_dict)

    # ------------------------------------------------------------------ config
    def stored_config(self, config_cls: type | None = None) -> dict:
        """The config stored in config.yaml (through `config_cls` when given, so new keys get defaults)."""
        path = self.root / "config.yaml"
        check(path.is_file(), f"{self.root} has no config.yaml; it is not a complete run: use a new --out folder")
        with os_errors(path, "read"):
            text = path.read_bytes().decode("utf-8", errors="replace")
        data = safe_yaml(text, str(path))
        check(isinstance(data, dict), f"{path} does not hold a config mapping; fix it or use a new --out folder")
        if config_cls is not None:
            for attempt in (data, migrate_renamed(data)):  # then with keys renamed since (config.RENAMED)
                try:
                    return to_dict(from_dict(config_cls, attempt))
                except CimnasError:
                    pass  # an unknown or mistyped key: compare as stored, the diff names it
                except TypeError as e:
                    raise CimnasError(f"{path} is not a {config_cls.__name__}; fix it or use a new --out folder") from e
        return data

    def check_extends(self, key: str, new: Any, done: Any, what: str = "epochs") -> None:
        """Refuse a resume whose `key` would end the run before what is already done (`done` units)."""
        check(new >= done, f"cannot resume {self.root} with {key}={new}: {done} {what} are already done and a "
              f"resume may extend a run, never rewrite its history; give {key} >= {done} or a new --out folder")

    def write_config(self, cfg: Any) -> None:
        cfg_dict = to_dict(cfg) if not isinstance(cfg, dict) else cfg
        atomic_write_bytes(self.root / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False).encode())

    def record_execution(self, **how: Any) -> None:
        """Note in run.json how this run was executed (workers, Ray address, torchrun world size)."""
        meta = read_json(self.root / "run.json")
        meta.setdefault("executions", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **how})
        write_json(self.root / "run.json", meta)

    # ------------------------------------------------------------------ files
    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def ckpt(self) -> Path:
        return self.root / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def log(self, msg: str, echo: bool = True) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if echo:
            print(line, flush=True)
        with os_errors(self.root / "run.log"), open(self.root / "run.log", "a") as f:
            f.write(line + "\n")

    def append(self, name: str, record: dict) -> None:
        append_jsonl(self.root / name, record)
        self.scalars(Path(name).stem, record)

    def scalars(self, group: str, record: dict, step: int | None = None) -> None:
        """Mirror the numbers of `record` to TensorBoard as `group/<field>` (only with `tensorboard: true`)."""
        if self._tb is not None:
            tensorboard.log_scalars(self._tb, group, record, step if step is not None else
                                    tensorboard.step_of(record, 0))

    def records(self, name: str) -> list[dict]:
        return read_jsonl(self.root / name)

    def rewrite_records(self, name: str, records: list[dict]) -> None:
        """Make log `name` hold exactly `records` (e.g. the ones a checkpoint covers), atomically."""
        path = self.root / name
        repair_jsonl(path)
        text = "".join(dumps(r) + "\n" for r in records)
        if not path.is_file() or path.read_text() != text:
            atomic_write_bytes(path, text.encode())

    def write_result(self, name: str, obj: Any) -> None:
        write_json(self.root / name, obj)

    def read_result(self, name: str) -> Any:
        return read_json(self.root / name)

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def save(self, name: str, payload: dict) -> None:
        """Atomically save checkpoint `checkpoints/<name>` (payload gets the checkpoint format)."""
        save_checkpoint(self.ckpt / name, {"format": CHECKPOINT_FORMAT, **payload})

    def load(self, name: str, fields: dict[str, type | tuple[type, ...]] | None = None,
             map_location: str | torch.device = "cpu") -> dict:
        """Load checkpoint `checkpoints/<name>`, checking its format and the types of `fields`."""
        return load_payload(self.ckpt / name, fields, map_location)


def _check_not_foreign(root: Path) -> bool:
    """Refuse a non-empty folder that is not a cimnas run (v2); returns whether it holds anything."""
    with os_errors(root, "read the run folder"):
        others = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)
        has_meta = (root / "run.json").is_file()
        has_config = (root / "config.yaml").is_file()
    if others and not has_meta:
        if has_config:
            raise CimnasError(f"{root} was written by an older cimnas (run format v1); this version reads "
                              f"{RUN_FORMAT}: start a new --out folder (the old results stay readable)")
        raise CimnasError(f"{root} is not empty and is not a cimnas run ({', '.join(others[:3])}"
                          f"{', ...' if len(others) > 3 else ''}); choose an empty or new --out folder")
    return bool(others)


def _admitted(key: str, resumable: Sequence[str]) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in resumable)


def load_payload(path: str | Path, fields: dict[str, type | tuple[type, ...]] | None = None,
                 map_location: str | torch.device = "cpu") -> dict:
    """Load a cimnas checkpoint (weights_only) and check its format and the types of `fields`."""
    ck = load_checkpoint(path, map_location=map_location)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise CimnasError(f"checkpoint {path} has format {ck.get('format')!r}, not {CHECKPOINT_FORMAT!r}; it was "
                          "written by another program or an older cimnas: re-create it or use a new --out folder")
    return require_fields(ck, fields or {}, path)


def load_state(module: torch.nn.Module | Any, state: dict, path: str | Path) -> None:
    """`module.load_state_dict(state)` with a one-line error when the checkpoint does not fit."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CimnasError(f"checkpoint {path} does not match this model or config ({first[:160]}); "
                          "delete it or use a new --out folder") from e


def guarded(fn: Callable[..., T], path: str | Path) -> Callable[..., T]:
    """Wrap a loader so any structural error in a checkpoint's content becomes a one-line error."""

    def call(*a: Any, **kw: Any) -> T:
        try:
            return fn(*a, **kw)
        except CimnasError:
            raise
        except (KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as e:
            raise CimnasError(f"checkpoint {path} is incomplete or corrupt ({type(e).__name__}); delete it or "
                              "use a new --out folder") from e

    return call
