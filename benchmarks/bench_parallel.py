"""Scale-out benchmarks (issue 11): Ray tasks for Monte-Carlo trials, torchrun/DDP for one training epoch.

- `ray_speedup_mc`: T Monte-Carlo trials of a small binarized LeNet-5, sharded into tasks of trial ranges
  (seeds from the trial index), in-process (`--workers 1`) / on 2 Ray workers. Goal >= 1.7 on 2 cores.
- `ray_overhead_1worker`: the same tasks on 1 Ray worker / in-process. Goal <= 1.1.
- `ray_speedup_uae_batch`: one UAE controller batch of 4 children (same cost, different fraction bits) trained
  and K-sample evaluated on digits, in-process / 2 Ray workers (the search's own task). Goal >= 1.7.
- `ddp_speedup_fit`: one epoch of a binarized ResNet-20 (CIFAR shape, synthetic data), single process / a
  2-process gloo DDP group, same global batch, one torch thread per process. Reported (>= 1.3 expected).

Ray starts once (2 CPUs) and its workers are warmed up before timing: the figures are steady-state costs, not
Ray's start-up (about 15 s here). The DDP group is launched by torchrun (`--standalone`, loopback) and times
epochs after a warm-up one, between barriers. Each figure is a median over rounds (Ray: alternating).

    .venv/bin/python benchmarks/run_all.py --only bench_parallel
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cimnas import distributed
from cimnas.config import OptimConfig
from cimnas.data.base import DataSplit
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig
from cimnas.hardware.mapping import map_model
from cimnas.hardware.montecarlo import CachedBatches, mapped_draw, run_trial
from cimnas.nn.models import build_model, rebuild_model
from cimnas.parallel import Parallelism, _run_on_ray, ensure_ray, run_tasks
from cimnas.train import fit
from cimnas.utils.seed import make_generator

TRIALS, SHARD = 48, 6
ROUNDS = 3


# ---------------------------------------------------------------------------- Monte-Carlo on Ray
def mc_shard(task_id, payload, shared) -> list[float]:
    """Trials [lo, hi) of the shared model (rebuilt from its state; trial seeds from the trial index)."""
    lo, hi = task_id
    model = rebuild_model(shared["arch"])
    model.load_state_dict(shared["state"])
    model.eval()
    batches = CachedBatches(shared["split"], 256, "cpu")
    draw = mapped_draw(map_model(model, CrossbarSpec()), DefectConfig(sa0_rate=0.01, sa1_rate=0.05).build())
    return [run_trial(model, draw, batches, shared["seed"], t) for t in range(lo, hi)]


def _mc_inputs() -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=28, precision="binary").eval()
    x = torch.rand(1024, 1, 28, 28, generator=make_generator(1))
    split = DataSplit(x, torch.randint(0, 10, (1024,), generator=make_generator(2)), 1.0)
    shared = {"arch": model.arch_meta, "state": model.state_dict(), "split": split, "seed": 0}
    tasks = {(lo, min(TRIALS, lo + SHARD)): None for lo in range(0, TRIALS, SHARD)}
    return tasks, shared


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_ray_mc() -> dict:
    tasks, shared = _mc_inputs()
    torch.set_num_threads(1)  # in-process = one worker = one thread, like a 1-CPU Ray task
    ray = ensure_ray(Parallelism(workers=2))
    one_ray, two_ray = Parallelism(workers=1), Parallelism(workers=2)
    in_process = lambda: run_tasks(mc_shard, tasks, shared=shared, progress=False).results  # noqa: E731
    on_ray = lambda par: _run_on_ray(mc_shard, tasks, list(tasks), par, shared, 0, None,  # noqa: E731
                                     _NoBar()).results
    reference = in_process()
    assert on_ray(two_ray) == reference == on_ray(one_ray)  # warm-up of both workers; same results
    t_in, t_one, t_two = [], [], []
    for _ in range(ROUNDS):
        t_in.append(_timed(in_process))
        t_one.append(_timed(lambda: on_ray(one_ray)))
        t_two.append(_timed(lambda: on_ray(two_ray)))
    ray.shutdown()
    med = statistics.median
    return {"ray_speedup_mc": med(t_in) / med(t_two), "ray_overhead_1worker": med(t_one) / med(t_in),
            "ray_mc_in_process_s": med(t_in), "ray_mc_trials": TRIALS}


def bench_uae_batch() -> dict:
    from cimnas.config import from_dict, validate
    from cimnas.data import load_dataset
    from cimnas.pipelines.uae.config import UAESearchConfig
    from cimnas.pipelines.uae.search import _child_task

    cfg = from_dict(UAESearchConfig, {
        "label": "bench", "progress": False, "device": "cpu",
        "space": {"n_conv": 2, "fc_hidden": 32, "channels": [16], "kernels": [3], "int_bits": [1],
                  "frac_bits": [2, 3, 4, 5], "pool_after": [1]},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.01}, "eval": {"k": 5, "statistic": "mean"}})
    validate(cfg)
    splits = load_dataset("digits", seed=0)
    archs = [cfg.space.arch_from_indices([0, 0, 0, f] * 2) for f in range(4)]
    tasks = {a.key(): a for a in archs}
    torch.set_num_threads(1)
    ray = ensure_ray(Parallelism(workers=2))
    in_process = lambda: run_tasks(_child_task, tasks, shared=(cfg, splits), progress=False).results  # noqa: E731
    on_two = lambda: _run_on_ray(_child_task, tasks, list(tasks), Parallelism(workers=2), (cfg, splits), 0,  # noqa: E731
                                 None, _NoBar()).results
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rs]  # noqa: E731
    assert strip(on_two()) == strip(in_process())  # warm-up; the same children
    t_in, t_two = [], []
    for _ in range(ROUNDS):
        t_in.append(_timed(in_process))
        t_two.append(_timed(on_two))
    ray.shutdown()
    med = statistics.median
    return {"ray_speedup_uae_batch": med(t_in) / med(t_two), "ray_uae_batch_in_process_s": med(t_in)}


class _NoBar:
    def update(self, n: int) -> None:
        pass


# ---------------------------------------------------------------------------- DDP epoch
def ddp_epoch_main(out: str) -> None:
    """One process of the DDP benchmark (under torchrun, or alone): median epoch time to `out` (rank 0)."""
    torch.set_num_threads(1)
    distributed.init("cpu")
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32, precision="binary")
    g = make_generator(0)
    split = DataSplit(torch.rand(512, 3, 32, 32, generator=g), torch.randint(0, 10, (512,), generator=g), 1.0)
    cfg = OptimConfig(epochs=1, batch_size=128, lr=0.1, progress=False, augment=False)
    fit(model, split, cfg, device="cpu", seed=0)  # warm-up epoch (allocator, DDP buckets)
    times = []
    for _ in range(ROUNDS):
        distributed.barrier()
        t0 = time.perf_counter()
        fit(model, split, cfg, device="cpu", seed=1)
        distributed.barrier()
        times.append(time.perf_counter() - t0)
    if distributed.is_rank0():
        Path(out).write_text(json.dumps({"epoch_s": statistics.median(times), **distributed.execution()}))
    distributed.shutdown()


def _epoch_seconds(world: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "t.json")
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
        cmd = (launcher if world > 1 else [sys.executable]) + [__file__, "--ddp-epoch", out]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        got = json.loads(Path(out).read_text())
        assert got["world_size"] == world, got
        return got["epoch_s"]


def bench_ddp_fit() -> dict:
    single = _epoch_seconds(1)
    two = _epoch_seconds(2)
    return {"ddp_speedup_fit": single / two, "ddp_fit_epoch_single_s": single}


def run() -> dict:
    return {**bench_ray_mc(), **bench_uae_batch(), **bench_ddp_fit()}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--ddp-epoch":
        ddp_epoch_main(sys.argv[2])
    else:
        print(run())
