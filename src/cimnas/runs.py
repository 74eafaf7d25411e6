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

import contextlib
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

from cimnas.config import MAX_CONFIG_BYTES, diff_configs, from_dict, migrate_renamed, safe_yaml, to_dict
from cimnas.errors import CimnasError, check
from cimnas.utils import tensorboard
from cimnas.utils.io import (
    CHECKPOINT_FORMAT,
    TMP_SUFFIX,
    append_jsonl,
    append_text,
    atomic_write_bytes,
    check_no_links,
    clean_stale_tmp,
    dumps,
    load_checkpoint,
    open_regular,
    os_error,
    os_errors,
    read_json,
    read_jsonl,
    read_regular,
    repair_jsonl,
    require_fields,
    require_regular,
    save_checkpoint,
    write_json,
)
from cimnas.utils.states import state_mismatch

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
    _cleaned: bool = False  # the first write happened (stale temporaries removed)
    _made: tuple[Path, ...] = ()  # what `open` created for a fresh run: abandon() removes it again
    _tb: Any = None  # TensorBoard writer when the config says `tensorboard: true` (cimnas.utils.tensorboard)
    _tb_class: Any = None  # made into `_tb` at the first write (validate, then write: no event file before)

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
        existed = root.is_dir()
        if existed:  # refuse a foreign folder before anything (the lock file) is written into it
            _check_not_foreign(root)
            check_no_links(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(root, e, "create the run folder") from e
        run = cls(root, kind)
        had_lock = os.path.lexists(root / LOCK_NAME)
        run._made = () if existed else (root,)
        if not had_lock:
            run._made = (root / LOCK_NAME, *run._made)
        try:
            run._lock()
        except BaseException:
            run.abandon()  # a lock that could not be written (a full disk): the lock file and a new folder go
            raise
        try:
            run._check_writable()
            run._adopt(cfg_dict, resume, resumable, config_cls)
            run._tb_class = writer
        except BaseException:
            run.abandon()
            raise
        return run

    def _lock(self) -> None:
        path = self.root / LOCK_NAME
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, doing="create the lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CimnasError(f"{self.root} is in use by another cimnas process (pid {holder}); wait for it to "
                              "finish or choose another --out folder") from e
        self._lock_fd = fd
        with os_errors(path, "write the lock file"):  # a full disk (ENOSPC) is one line, not a traceback
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)

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

    def abandon(self) -> None:
        """Close a run refused before its first write (a config check after `open`): a fresh run leaves nothing
        behind, neither its run.json / config.yaml nor the lock file nor the folder `open` created, so the same
        command, fixed, needs no --resume. A run that wrote anything is only closed."""
        # only what this process made while holding the lock (a second writer refused leaves the first's alone)
        made = self._made if not self._cleaned and self._lock_fd is not None else ()
        self.close()
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir() if p == self.root else p.unlink()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.abandon() if exc_type is not None else self.close()

    def _check_writable(self) -> None:
        probe = self.root / f".write-probe-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(b"x")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            if os.path.lexists(probe):
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
        check(isinstance(meta.get("executions", []), list)
              and all(isinstance(e, dict) for e in meta.get("executions", [])),
              f"{meta_path}: 'executions' is not a list of records; the file is damaged: fix it or use a new "
              "--out folder")
        if meta.get("kind") != self.kind:
            raise CimnasError(f"{self.root} holds a {meta.get('kind')!r} run, not a {self.kind!r} run; "
                              "choose another --out folder")
        if not resume:
            raise CimnasError(f"{self.root} already holds a {self.kind} run; pass --resume to continue it or "
                              "choose a new --out folder")
        old = self.stored_config(config_cls)
        diff = [k for k in diff_configs(old, cfg_dict) if not _admitted(k, resumable)]
        if diff:
            raise CimnasError(f"cannot resume {self.root}: the config differs from the saved run at "
                              f"{', '.join(diff)}; resume with the original config or use a new --out folder")
        self._check_files()
        self.resumed = True

    def _check_files(self) -> None:
        """Validate-then-write: before a resume writes anything, every JSONL log must read (numbers checked), every
        file the run appends to or replaces must open for writing (an immutable log fails here, not after
        config.yaml was rewritten; opening for append changes nothing) and every checkpoint must load (format,
        finite tensors; its fit to the model is checked where it is loaded, `load_state`)."""
        for p in sorted(self.root.iterdir()):
            if p.name == LOCK_NAME or not p.is_file():
                continue
            if p.suffix == ".jsonl":
                read_jsonl(p)
            if p.suffix in (".jsonl", ".json", ".yaml", ".log"):
                os.close(open_regular(p, os.O_WRONLY | os.O_APPEND, doing="write"))
        if self.ckpt.is_dir():  # every checkpoint reads, is a cimnas one and holds finite tensors only
            for p in sorted(self.ckpt.iterdir()):
                if p.is_file() and not p.name.endswith(TMP_SUFFIX):
                    load_payload(p)

    def _start(self, cfg_dict: dict) -> None:
        write_json(self.root / "run.json", {"format": RUN_FORMAT, "kind": self.kind,
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            "host": platform.node(), "torch": torch.__version__})
        self._made = (self.root / "run.json", self.root / "config.yaml", *self._made)
        atomic_write_bytes(self.root / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False).encode())

    # ------------------------------------------------------------------ config
    def stored_config(self, config_cls: type | None = None) -> dict:
        """The config stored in config.yaml (through `config_cls` when given, so new keys get defaults)."""
        path = self.root / "config.yaml"
        check(require_regular(path, missing_ok=True),
              f"{self.root} has no config.yaml; it is not a complete run: use a new --out folder")
        text = read_regular(path, limit=MAX_CONFIG_BYTES).decode("utf-8", errors="replace")
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

    def _before_write(self) -> None:
        """Called by every write: the first one removes the temporary files of interrupted atomic writes (after
        every check of the resume, so a refused resume leaves the folder as it was)."""
        if not self._cleaned:
            clean_stale_tmp(self.root)
            self._cleaned = True
            if self._tb_class is not None:
                self._tb = self._tb_class(str(self.root / "tensorboard"))

    def write_config(self, cfg: Any) -> None:
        self._before_write()
        cfg_dict = to_dict(cfg) if not isinstance(cfg, dict) else cfg
        atomic_write_bytes(self.root / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False).encode())

    def record_execution(self, **how: Any) -> None:
        """Note in run.json how this run was executed (workers, Ray address, torchrun world size)."""
        self._before_write()
        meta = read_json(self.root / "run.json")
        check(isinstance(meta, dict) and isinstance(meta.setdefault("executions", []), list),
              f"{self.root / 'run.json'}: 'executions' is not a list; the file is damaged: use a new --out folder")
        meta["executions"].append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **how})
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
        self._before_write()
        append_text(self.root / "run.log", line + "\n")

    def append(self, name: str, record: dict) -> None:
        self._before_write()
        append_jsonl(self.root / name, record)
        self.scalars(Path(name).stem, record)

    def scalars(self, group: str, record: dict, step: int | None = None) -> None:
        """Mirror the numbers of `record` to TensorBoard as `group/<field>` (only with `tensorboard: true`)."""
        if self._tb_class is not None:
            self._before_write()  # the writer is made at the first write
        if self._tb is not None:
            tensorboard.log_scalars(self._tb, group, record, step if step is not None else
                                    tensorboard.step_of(record, 0))

    def records(self, name: str) -> list[dict]:
        return read_jsonl(self.root / name)

    def rewrite_records(self, name: str, records: list[dict]) -> None:
        """Make log `name` hold exactly `records` (e.g. the ones a checkpoint covers), atomically."""
        self._before_write()
        path = self.root / name
        repair_jsonl(path)
        text = "".join(dumps(r) + "\n" for r in records)
        if not require_regular(path, missing_ok=True) or read_regular(path) != text.encode():
            atomic_write_bytes(path, text.encode())

    def write_result(self, name: str, obj: Any) -> None:
        self._before_write()
        write_json(self.root / name, obj)

    def read_result(self, name: str) -> Any:
        return read_json(self.root / name)

    def has(self, name: str) -> bool:
        return require_regular(self.root / name, missing_ok=True)

    def save(self, name: str, payload: dict) -> None:
        """Atomically save checkpoint `checkpoints/<name>` (payload gets the checkpoint format)."""
        self._before_write()
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
    """`module.load_state_dict(state)` with a one-line error when the checkpoint does not fit: a model's tensors
    must have its dtypes (shapes are checked by torch), an optimiser's state tensors the shapes of its
    parameters, and any other state (a scheduler's) the kinds of value (number, list, mapping...) it holds now."""
    check(isinstance(state, dict), f"checkpoint {path}: the state of {type(module).__name__} is a "
          f"{type(state).__name__}, not a mapping; delete it or use a new --out folder")
    bad = state_mismatch(module, state)
    if bad:
        raise CimnasError(f"checkpoint {path} does not match this model or config ({type(module).__name__}: "
                          f"{bad[:160]}); delete it or use a new --out folder")
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
