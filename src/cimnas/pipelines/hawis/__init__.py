"""HAWIS pipeline: stage A (super-net pretraining), B (width search), C (retrain + evaluation).

Run folder (`cimnas hawis run --config FILE --out DIR [--resume]`, kind "hawis", cimnas.runs.RunFolder)::

    run.json, config.yaml  run description and the resolved config (resume checks it: config.py lists the keys
                           that may change)
    run.log                the log (also printed)
    space.json             the width space (base widths, r_min, r_max, d)
    episodes.jsonl         one line per finished episode (widths, reward, accuracy, energy, times)
    best_arch.json         highest-reward widths and their search metrics
    pareto.json            accuracy-vs-energy Pareto front of the searched candidates
    stage_c.json           stage C per trained model: val_accuracy (held-out search_eval), test_accuracy, energy,
                           robustness (every crossbar-mapped model: searched, Pareto, U-kx, 8-bit)
    final.json             the searched model: accuracies, energy_uj, BiOps/FLOPs, robustness
    checkpoints/           supernet_pretrain.pt (per epoch), supernet.pt (after A), search_state.pt (after every
                           episode), final_model.pt (searched), model_<label>.pt (the other stage-C models, e.g.
                           model_U-2x.pt); all cimnas-checkpoint-v2 payloads
    figures/, table.md     reports (cimnas.reports.hawis_plots, from these files only)

Modules: config (HawisConfig), context (run folder, data, model builder, size limit), stage_a, stage_b, stage_c.

torchrun: `torchrun --nproc_per_node N -m cimnas hawis pretrain|retrain --config FILE --out DIR` trains stage A
or stage C data-parallel (gloo on CPU, NCCL on CUDA); rank 0 owns the run folder and run.json's `executions`
records engine, world_size and backend. `hawis run` / `hawis search` refuse torchrun (stage B is one driver).
"""

from __future__ import annotations

import time
from pathlib import Path

from cimnas import distributed
from cimnas.errors import check
from cimnas.parallel import Parallelism
from cimnas.pipelines.hawis.config import HawisConfig, load_hawis_config
from cimnas.pipelines.hawis.context import (
    Context,
    Follower,
    load_run_config,
    make_context,
    open_run,
    record_resume,
)
from cimnas.pipelines.hawis.stage_a import build_supernet, stage_pretrain
from cimnas.pipelines.hawis.stage_b import best_record, pareto_front, stage_search
from cimnas.pipelines.hawis.stage_c import TORCHRUN_AND_RAY, stage_retrain, train_model
from cimnas.search.env import PHASES, EnvConfig

ALL_STAGES = ("pretrain", "search", "retrain", "report")


def run_pipeline(cfg: HawisConfig, out: str | Path, *, resume: bool = False,
                 stages: tuple[str, ...] = ALL_STAGES, stop_after: int | None = None,
                 parallel: Parallelism | None = None) -> dict:
    """Run the requested stages into run folder `out`; returns a summary dict. `parallel`: stage C's models on
    Ray workers (stages A and B stay one driver: B's episodes depend on each other).

    Under torchrun (stages "pretrain" or "retrain" only) rank 0 opens the run folder and builds its context
    first; the other ranks build the same context around a `Follower`, train alongside and return {}. A run
    folder rank 0 refuses reaches every rank as the same one-line error."""
    device = distributed.init(cfg.device)
    if distributed.active():
        check("search" not in stages, "stage B (the width search) does not run under torchrun: its episodes share "
              "one super-net and one replay buffer; run `cimnas hawis search` once, without torchrun")
        check(parallel is None or parallel.in_process, TORCHRUN_AND_RAY)
    if not distributed.is_rank0():
        distributed.share()  # rank 0's refusal raises here
        ctx = make_context(cfg, Follower(out))
        if "pretrain" in stages:
            stage_pretrain(ctx)
        if "retrain" in stages:
            stage_retrain(ctx)
        return {}
    with distributed.rank0_section():
        # data, model sizes and (your own network's) channel groups are checked before anything is written:
        # a factory that raises or a network whose groups cannot be derived leaves no run folder behind
        ctx = make_context(cfg, Follower(out))
        run = open_run(cfg, out, resume)
        try:
            ctx.run = run
            record_resume(run, cfg)  # the admitted config changes, after every check (validate, then write)
            run.write_result("space.json", ctx.space.to_dict())
            run.record_execution(stages=list(stages), device=str(device), **distributed.execution())
        except BaseException:
            run.abandon()  # refused before its first write: a fresh folder is removed again
            raise
    distributed.share("opened")
    try:
        summary: dict = {"run_dir": str(run.root)}
        t0 = time.perf_counter()
        records = None
        if "pretrain" in stages or "search" in stages:
            net = stage_pretrain(ctx)
            if "search" in stages:
                records = stage_search(ctx, net, stop_after=stop_after)
                summary["best"] = run.read_result("best_arch.json")
        if "retrain" in stages:
            summary["final"] = stage_retrain(ctx, records, parallel)
        if "report" in stages:
            from cimnas.reports.hawis_plots import make_report  # lazy: matplotlib, figures only

            summary["figures"] = make_report(run.root)
        summary["wall_s"] = round(time.perf_counter() - t0, 1)
        return summary
    finally:
        run.close()


__all__ = ["ALL_STAGES", "PHASES", "Context", "EnvConfig", "HawisConfig", "best_record", "build_supernet",
           "load_hawis_config", "load_run_config", "make_context", "open_run", "pareto_front", "run_pipeline",
           "stage_pretrain", "stage_retrain", "stage_search", "train_model"]
