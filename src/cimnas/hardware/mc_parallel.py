"""Monte-Carlo trials farmed out through `cimnas.parallel.run_tasks` (Ray workers or this process).

Trial t of a setting always draws from derive_seed(seed, "mc-trial", t) (`montecarlo.run_trial`), so sharding
the trials into ranges [lo, hi) and running the shards anywhere gives exactly the accuracies of one
`evaluate_trials` call. The model travels as (arch_meta, state_dict) and the evaluated samples as one tensor
pair, both put in Ray's object store once per call; each task rebuilds the model, maps it, and runs its range.
With `Parallelism()` (one worker, no address) everything stays in this process on the usual fast path.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import nn

from cimnas.data.base import DataSplit
from cimnas.errors import CimnasError, check
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig, DefectModel
from cimnas.hardware.mapping import map_model
from cimnas.hardware.montecarlo import (
    CachedBatches,
    MCResult,
    _as_defects,
    _level_config,
    check_mc_work,
    evaluate_trials,
    mapped_draw,
    model_weights,
    run_trial,
    weight_draw,
)
from cimnas.hardware.periphery import PeripheryConfig
from cimnas.nn.models import rebuild_model
from cimnas.parallel import Parallelism, TaskRun, run_tasks
from cimnas.utils.seed import derive_seed


def _shared(model: nn.Module, split: Any, batch_size: int, max_samples: int | None) -> dict:
    arch = getattr(model, "arch_meta", None)
    if not isinstance(arch, dict):
        raise CimnasError("parallel Monte-Carlo needs a cimnas model (with arch_meta, e.g. from a checkpoint); "
                          "run with --workers 1")
    cached = CachedBatches(split, batch_size, "cpu", max_samples)
    x = torch.cat([b[0] for b in cached.batches])
    y = torch.cat([b[1] for b in cached.batches])
    return {"arch": arch, "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "split": DataSplit(x, y, 1.0), "batch_size": batch_size}


def _rebuilt(shared: dict, device: str) -> tuple[nn.Module, CachedBatches]:
    model = rebuild_model(shared["arch"])
    model.load_state_dict(shared["state"])
    model.to(device).eval()
    return model, CachedBatches(shared["split"], shared["batch_size"], device)


def trial_range_task(task_id: Hashable, payload: dict, shared: dict) -> list[float]:
    """Accuracies of trials [lo, hi) of one defect setting (`task_id` = (label, lo, hi))."""
    _, lo, hi = task_id
    model, batches = _rebuilt(shared, payload["device"])
    ds = _as_defects(payload["defects"])
    spec = payload["spec"]
    draw = (mapped_draw(map_model(model, spec), ds, payload.get("periphery")) if spec is not None
            else weight_draw(model, ds))
    if not ds:
        return [run_trial(model, draw, batches, payload["seed"], 0, payload["device"])] * (hi - lo)
    return [run_trial(model, draw, batches, payload["seed"], t, payload["device"]) for t in range(lo, hi)]


def trial_shards(trials: int, workers: int) -> list[tuple[int, int]]:
    """Trial ranges for `workers` (about four per worker, for balance); the split never changes a result."""
    n = max(1, min(trials, 4 * workers))
    size = math.ceil(trials / n)
    return [(lo, min(trials, lo + size)) for lo in range(0, trials, size)]


def parallel_trials(model: nn.Module, split: Any, spec: CrossbarSpec | None,
                    defects: DefectConfig | Sequence[DefectModel], trials: int,
                    seed: int, *, parallel: Parallelism, batch_size: int = 512, device: str = "cpu",
                    max_samples: int | None = None, progress: bool = False,
                    periphery: PeripheryConfig | None = None) -> tuple[MCResult, dict]:
    """`evaluate_trials` with the trials sharded over `parallel`'s workers -> (result, execution)."""
    if parallel.in_process:
        res = evaluate_trials(model, split, spec, defects, trials, seed, batch_size, device,
                              max_samples=max_samples, progress=progress, periphery=periphery)
        return res, {"engine": "in-process", "workers": 1}
    check(isinstance(trials, int) and trials >= 1, f"--trials must be >= 1, got {trials}")
    if isinstance(defects, DefectConfig):
        defects.validate()
    check_mc_work(trials, model_weights(model), "Monte-Carlo trials")
    payload = {"defects": defects, "spec": spec, "seed": seed, "device": str(device), "periphery": periphery}
    tasks = {("", lo, hi): payload for lo, hi in trial_shards(trials, parallel.workers)}
    run = run_tasks(trial_range_task, tasks, shared=_shared(model, split, batch_size, max_samples),
                    progress=progress, desc="monte-carlo", **parallel.kwargs())
    return MCResult.from_accs([a for shard in run.results for a in shard]), run.execution


def parallel_sweep(models: dict[str, nn.Module], split: Any, spec: CrossbarSpec, sweep: dict[str, list[float]],
                   trials: int, seed: int, *, parallel: Parallelism, batch_size: int = 512, device: str = "cpu",
                   max_samples: int | None = None, gaussian_mode: str = "absolute",
                   progress: bool = False) -> tuple[dict, dict]:
    """`robustness_sweep`'s result with one task per (model, kind, level) -> (result, execution)."""
    for kind, levels in sweep.items():
        for lv in levels:
            _level_config(kind, lv, gaussian_mode).validate()
    shared = {label: _shared(m, split, batch_size, max_samples) for label, m in models.items()}
    tasks = {(label, kind, lv): {"defects": _level_config(kind, lv, gaussian_mode), "spec": spec,
                                 "seed": derive_seed(seed, kind, lv), "device": str(device), "trials": trials}
             for label in models for kind, levels in sweep.items() for lv in levels}
    run: TaskRun = run_tasks(_sweep_task, tasks, shared=shared, progress=progress, desc="robustness sweep",
                             **parallel.kwargs())
    n = shared[next(iter(shared))]["split"].labels.numel() if shared else 0
    out: dict = {"trials": trials, "seed": seed, "spec": spec.to_dict(), "samples": n,
                 "kinds": {k: {"levels": list(v), "models": {}} for k, v in sweep.items()}}
    for (label, kind, lv), accs in zip(tasks, run.results, strict=True):
        out["kinds"][kind]["models"].setdefault(label, []).append({"level": lv, **MCResult.from_accs(accs).to_dict()})
    return out, run.execution


def _sweep_task(task_id: Hashable, payload: dict, shared: dict) -> list[float]:
    label = task_id[0]
    return trial_range_task((label, 0, payload["trials"]), payload, shared[label])
