"""The one way to run independent tasks: in this process, on N local Ray workers, or on a Ray cluster.

A task is a pure function of its inputs: `fn(task_id, payload, shared) -> result` (plain data). `task_id`
is the task's identity (a trial range, an (episode, child) pair, a model label); every random draw inside
the task derives its seed from (run seed, task_id), never from which worker runs it or when it finishes, so
the results do not depend on the worker count. `shared` holds the big read-only inputs (model state, data
tensors): on Ray it is put in the object store ONCE and every task receives it by reference.

    result = run_tasks(shard_trials, {(0, 50): None, (50, 100): None}, workers=2, shared={"state": sd})
    result.results        # in task order, never in completion order
    result.execution      # {"engine": "ray", "workers": 2, ...} -> RunFolder.record_execution(**...)

Resume: `on_result(task_id, result)` is called in task order, as soon as every earlier task has finished,
so a pipeline that appends there to its JSONL log holds a prefix of the tasks in order. A killed run loses no
finished-and-logged task and logs none twice: the caller drops the tasks already in its log before calling.

`workers == 1` without `ray_address` runs the tasks in this process and never imports Ray. Otherwise Ray
runs them (`pip install 'cimnas[distributed]'`): `ray.init(num_cpus=workers * cpus)` locally, or
`ray.init(address=...)` to join a cluster (`"auto"` as Ray means it). A worker that dies is retried (at most
`retries` times, Ray's `max_retries`); a task that raises a `CimnasError` fails the run with that one-line
message; any other task error is re-raised as the original exception type.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from cimnas.errors import CimnasError, check

TaskFn = Callable[[Hashable, Any, Any], Any]
INSTALL_HINT = "pip install 'cimnas[distributed]'"


@dataclass(frozen=True)
class TaskResources:
    """What one task reserves on a Ray worker (ignored in-process).

    cpus: CPU cores per task; also the task's torch intra-op thread count. gpus: GPUs per task; a fraction
    (e.g. 0.25) packs several small tasks onto one GPU.
    """

    cpus: float = 1.0
    gpus: float = 0.0

    def validate(self) -> TaskResources:
        check(math.isfinite(self.cpus) and self.cpus > 0, f"task CPUs must be > 0, got {self.cpus}")
        check(math.isfinite(self.gpus) and self.gpus >= 0, f"task GPUs must be >= 0, got {self.gpus}")
        check(self.gpus <= 1 or float(self.gpus).is_integer(),
              f"task GPUs above 1 must be whole, got {self.gpus}")
        return self


@dataclass(frozen=True)
class Parallelism:
    """How a command runs its independent tasks (the `--workers`, `--ray-address`, `--task-cpus`,
    `--task-gpus` flags)."""

    workers: int = 1
    ray_address: str | None = None
    resources: TaskResources = field(default_factory=TaskResources)

    def validate(self) -> Parallelism:
        check(isinstance(self.workers, int) and self.workers >= 1, f"--workers must be >= 1, got {self.workers}")
        check(self.ray_address is None or bool(str(self.ray_address).strip()),
              "--ray-address must name a cluster (host:port, or 'auto'); omit it to run locally")
        self.resources.validate()
        if self.ray_address is not None:
            _check_reachable(str(self.ray_address))  # up front: Ray retries a dead address for long, noisily
        if self.resources.gpus > 0 and self.ray_address is None:  # up front: Ray would wait forever for a GPU
            import torch

            have = torch.cuda.device_count()
            check(have >= self.resources.gpus, f"--task-gpus {self.resources.gpus:g} asks for a GPU per task and this "
                  f"machine has {have}; drop --task-gpus or give --ray-address of a cluster with GPUs")
        return self

    @property
    def in_process(self) -> bool:
        return self.workers == 1 and self.ray_address is None

    def kwargs(self) -> dict:
        """Keyword arguments for `run_tasks`."""
        return {"workers": self.workers, "ray_address": self.ray_address, "resources": self.resources}


def add_parallel_args(parser: argparse.ArgumentParser) -> None:
    """Add --workers / --ray-address / --task-cpus / --task-gpus to a command."""
    g = parser.add_argument_group("parallel tasks (Ray)")
    g.add_argument("--workers", type=int, default=1,
                   help="local Ray workers (1 = run in this process, without Ray)")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster instead of starting one ('auto', or head host:port)")
    g.add_argument("--task-cpus", type=float, default=1.0, help="CPU cores (= torch threads) per task")
    g.add_argument("--task-gpus", type=float, default=0.0, help="GPUs per task (fractions pack tasks onto one)")


def parallelism_from_args(args: argparse.Namespace) -> Parallelism:
    """The validated `Parallelism` of parsed `add_parallel_args` flags."""
    return Parallelism(args.workers, args.ray_address, TaskResources(args.task_cpus, args.task_gpus)).validate()


class Shared:
    """Big read-only task inputs put in Ray's object store once and reused by several `run_tasks` calls (a UAE
    search's data for every controller batch): `run_tasks(..., shared=Shared(splits, par))`."""

    def __init__(self, value: Any, par: Parallelism):
        self.value = value
        self.ref = None if par.in_process else ensure_ray(par).put(value)


@dataclass
class TaskRun:
    """What `run_tasks` returns: the results in task order and how they were computed."""

    results: list[Any]
    execution: dict


def run_tasks(fn: TaskFn, tasks: Mapping[Hashable, Any], *, workers: int = 1, ray_address: str | None = None,
              resources: TaskResources | None = None, shared: Any = None, retries: int = 2,
              progress: bool = True, desc: str = "tasks",
              on_result: Callable[[Hashable, Any], None] | None = None) -> TaskRun:
    """Run `fn(task_id, payload, shared)` for every `task_id: payload` of `tasks` (in its order).

    Returns the results in task order and an `execution` dict (engine, workers, address, Ray version).
    `on_result(task_id, result)` is called in task order as results become available in order.
    """
    resources = (resources or TaskResources()).validate()
    par = Parallelism(workers, ray_address, resources).validate()
    check(isinstance(retries, int) and retries >= 0, f"retries must be >= 0, got {retries}")
    check(isinstance(tasks, Mapping), "tasks must be a mapping {task_id: payload} (its order is the task order)")
    ids = list(tasks)
    bar = tqdm(total=len(ids), desc=desc, disable=not (progress and sys.stderr.isatty()))
    try:
        if par.in_process or not ids:  # nothing to farm out: no Ray start-up
            return TaskRun(_run_in_process(fn, tasks, ids, shared, on_result, bar),
                           {"engine": "in-process", "workers": 1})
        return _run_on_ray(fn, tasks, ids, par, shared, retries, on_result, bar)
    finally:
        bar.close()


def _run_in_process(fn: TaskFn, tasks: Mapping, ids: list, shared: Any, on_result: Callable | None,
                    bar: tqdm) -> list:
    results = []
    shared = shared.value if isinstance(shared, Shared) else shared
    for task_id in ids:
        results.append(fn(task_id, tasks[task_id], shared))
        if on_result is not None:
            on_result(task_id, results[-1])
        bar.update(1)
    return results


# ---------------------------------------------------------------------------- Ray
def import_ray() -> Any:
    """The `ray` module, or a one-line error naming the extra to install."""
    try:
        import ray  # optional dependency: imported only when tasks run on Ray
    except ImportError:
        raise CimnasError(f"Ray is not installed: {INSTALL_HINT} (or run with --workers 1)") from None
    return ray


def ensure_ray(par: Parallelism) -> Any:
    """Start a local Ray (`num_cpus = workers * task cpus`) or join `par.ray_address`, unless Ray is already
    initialised in this process (then it is reused, e.g. a test's cluster); Ray stays up for later calls."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        with _stderr_kept_on_success():  # Ray's own warnings of a failed start are not the user's error line
            if par.ray_address is not None:
                ray.init(address=par.ray_address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR")
            else:
                ray.init(num_cpus=max(1, math.ceil(par.workers * par.resources.cpus)), include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        where = par.ray_address or "a local cluster"
        raise CimnasError(f"cannot start Ray on {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                          "; check --ray-address (a running head node, or 'auto')") from None
    gpus = ray.cluster_resources().get("GPU", 0.0)
    check(gpus >= par.resources.gpus, f"--task-gpus {par.resources.gpus:g} asks for a GPU per task and the Ray "
          f"cluster at {par.ray_address or 'this machine'} has {gpus:g}; drop --task-gpus or add GPU nodes")
    return ray


def _check_reachable(address: str) -> None:
    """A `host:port` (or `ray://host:port`) --ray-address must answer a TCP connection within 3 s; Ray itself
    retries for a long time and prints a page of warnings before its error."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    check(bool(host) and port.isdigit() and 0 < int(port) < 65536,
          f"--ray-address {address!r} is not host:port (or 'auto'); give the head node's address")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise CimnasError(f"no Ray cluster answers at --ray-address {address} ({e.strerror or e}); start the head "
                          "node (`ray start --head`) or check the address") from None


@contextlib.contextmanager
def _stderr_kept_on_success() -> Iterator[None]:
    """Hold what is written to file descriptor 2 (Ray's C++ and Python warnings) inside the block; write it out
    after a success, drop it after a failure (whose one-line error says what went wrong)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def _on_worker(fn: TaskFn, task_id: Hashable, payload: Any, shared: Any, threads: int) -> Any:
    """What a Ray worker runs: one task with `threads` torch intra-op threads."""
    import torch  # here, not at the top: the CLI registers --workers through this module without loading torch

    torch.set_num_threads(threads)
    return fn(task_id, payload, shared)


def _unwrap(ray: Any, e: BaseException, task_id: Hashable) -> BaseException:
    """The error to raise for a failed task: its one-line CimnasError, its original exception, or a one-line
    CimnasError for a worker that kept dying."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, CimnasError):
        return CimnasError(str(cause))
    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        return cause
    if isinstance(e, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError
                  | ray.exceptions.ObjectLostError):
        return CimnasError(f"task {task_id!r}: its Ray worker died and the retries are spent "
                           f"({type(e).__name__}); check the workers' memory, or raise --task-cpus")
    return e


def _run_on_ray(fn: TaskFn, tasks: Mapping, ids: list, par: Parallelism, shared: Any, retries: int,
                on_result: Callable | None, bar: tqdm) -> TaskRun:
    ray = ensure_ray(par)
    res = par.resources
    remote = ray.remote(_on_worker).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=retries,
                                            retry_exceptions=False)
    # once: every task gets the reference, not a copy in its arguments
    shared_ref = shared.ref if isinstance(shared, Shared) and shared.ref is not None else ray.put(
        shared.value if isinstance(shared, Shared) else shared)
    fn_ref = ray.put(fn)
    threads = max(1, int(res.cpus))
    # locally at most `workers` tasks in flight (the worker count is a promise); on a cluster Ray schedules all
    window = par.workers if par.ray_address is None else len(ids)
    refs: dict[int, Any] = {}
    results: dict[int, Any] = {}
    submitted = emitted = 0
    try:
        while emitted < len(ids):
            while submitted < len(ids) and len(refs) < window:
                task_id = ids[submitted]
                refs[submitted] = remote.remote(fn_ref, task_id, tasks[task_id], shared_ref, threads)
                submitted += 1
            index_of = {r: i for i, r in refs.items()}
            done, _ = ray.wait(list(index_of), num_returns=1)
            for ref in done:
                i = index_of[ref]
                refs.pop(i)  # finished: never cancelled below (cancelling a finished task trips a Ray check)
                try:
                    results[i] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - unwrapped below into what the caller can act on
                    err = _unwrap(ray, e, ids[i])
                    # a CimnasError is one line for the CLI; anything else is a bug: keep the worker's traceback
                    raise err from (None if isinstance(err, CimnasError) or err is e else e)
                bar.update(1)
            while emitted in results and emitted < len(ids):  # in task order, as soon as the prefix is done
                if on_result is not None:
                    on_result(ids[emitted], results[emitted])
                emitted += 1
    except BaseException:
        if refs:  # only tasks still pending: a finished one may not be cancelled
            _, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=0)
            for ref in pending:
                ray.cancel(ref, force=True)
        raise
    execution = {"engine": "ray", "workers": par.workers, "address": par.ray_address or "local",
                 "ray_version": ray.__version__, "task_cpus": res.cpus, "task_gpus": res.gpus,
                 "cluster_cpus": ray.cluster_resources().get("CPU", 0.0)}
    return TaskRun([results[i] for i in range(len(ids))], execution)
