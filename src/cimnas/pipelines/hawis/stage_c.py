"""Stage C: train the searched widths (and Pareto points, U-kx baselines, FP / 8-bit references) from scratch.

Every model is trained by `cimnas.train.fit` on `search_train`; `val_accuracy` is measured on the held-out
`search_eval` part of the training data (what any calibration or model selection may use, e.g. the study's
lambda calibration), and `test_accuracy` on the test split once per model, for the final number. Results go to
stage_c.json after each model (a resume skips finished ones), the searched model to checkpoints/final_model.pt,
its summary (with Monte-Carlo robustness under `defects`) to final.json. Under torchrun
(`torchrun --nproc_per_node N -m cimnas hawis retrain ...`) each model trains data-parallel (`stage_retrain`).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from torch import nn

from cimnas import distributed
from cimnas.config import to_dict
from cimnas.errors import check
from cimnas.hardware.energy import estimate_model
from cimnas.nn.models import model_payload
from cimnas.parallel import Parallelism, run_tasks
from cimnas.pipelines.hawis import seeds
from cimnas.pipelines.hawis.config import RetrainConfig
from cimnas.pipelines.hawis.context import REFERENCE_PRECISION, Context, arch_probe, mc_accuracies
from cimnas.pipelines.hawis.stage_b import chosen_record, pareto_front
from cimnas.stats import at_chance, summarize
from cimnas.train import evaluate, fit, make_optimizer, make_scheduler
from cimnas.utils.seed import derive_seed, resolve_device, seed_everything
from cimnas.utils.units import pct, uj

RESULTS = "stage_c.json"
TORCHRUN_AND_RAY = ("--workers / --ray-address (Ray workers) and torchrun do not mix: under torchrun every "
                    "stage-C model trains data-parallel over the ranks; drop --workers, or run without torchrun")


def train_model(ctx: Context, model: nn.Module, rcfg: RetrainConfig, label: str, *, test: bool = True,
                seed: int | None = None) -> dict:
    """Train `model` with `rcfg` on search_train; returns {val_accuracy, test_accuracy, train_s, optimizer,
    scheduler} (the last two: state dicts for the checkpoint). `test=False` never reads the test split (no
    test_accuracy): for design choices tuned on validation accuracy (hawis rank-check). `seed`: the batch-order
    seed (default: the run's)."""
    opt = make_optimizer(model, rcfg)
    sched = make_scheduler(opt, rcfg)
    every = max(1, rcfg.epochs // 5)

    def on_epoch_end(epoch: int, record: dict) -> None:
        if epoch % every == 0 or epoch == rcfg.epochs:
            ctx.run.log(f"stage C {label} epoch {epoch}/{rcfg.epochs}: loss {record['loss']:.4f} "
                        f"train acc {pct(record['train_acc'])}")

    t0 = time.perf_counter()
    fit(model, ctx.splits.search_train, rcfg, device=ctx.device, seed=ctx.seed if seed is None else seed,
        optimizer=opt, scheduler=sched, on_epoch_end=on_epoch_end, label=f"retrain-{label}",
        desc=f"stage C {label} epoch")
    out = {"val_accuracy": evaluate(model, ctx.splits.search_eval, batch_size=rcfg.eval_batch_size,
                                    device=ctx.device), "train_s": round(time.perf_counter() - t0, 2)}
    if test:
        out["test_accuracy"] = evaluate(model, ctx.splits.test, batch_size=rcfg.eval_batch_size, device=ctx.device)
    return {**out, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}


def jobs_for(ctx: Context, records: list[dict] | None) -> tuple[dict, list[tuple[str, list[int] | None, str]]]:
    """(the model to retrain with its search metrics, [(label, widths, precision)] of every stage-C model)."""
    rcfg = ctx.cfg.retrain
    if rcfg.widths is not None:
        best = {"widths": list(rcfg.widths), "source": "retrain.widths"}
    else:
        records = records if records is not None else ctx.run.records("episodes.jsonl")
        best = dict(chosen_record(ctx.run, records, ctx.cfg.search.rerank_top), source="search")
    jobs: list[tuple[str, list[int] | None, str]] = [("searched", best["widths"], "binary")]
    if rcfg.widths is None and rcfg.pareto_models > 0:
        for r in pareto_front(records)[: rcfg.pareto_models]:
            if r["widths"] != best["widths"]:
                jobs.append((f"pareto-ep{r['episode']}", r["widths"], "binary"))
    for k in rcfg.baselines:
        jobs.append((f"U-{k:g}x", ctx.uniform(k), "binary"))
    if rcfg.aligned_baseline:
        au = seeds.aligned_baseline(arch_probe(ctx), best["widths"], ctx.cfg.space.d)
        best["aligned_uniform"] = au
        if au["widths"] != list(best["widths"]):  # else the searched net fills its crossbars: its own baseline
            jobs.append((au["label"], au["widths"], "binary"))
    for ref in rcfg.references:
        label, precision = REFERENCE_PRECISION[ref]
        jobs.append((label, None, precision))
    return best, seeds.with_seeds(jobs, rcfg.seeds)


def retrain_job(ctx: Context, label: str, widths: list[int] | None, precision: str) -> dict:
    """Train one stage-C model from scratch (init seeded by its label) -> {"entry", "checkpoint"}; a pure function
    of (config, data, label), so it runs unchanged on a Ray worker."""
    cfg, rcfg = ctx.cfg, ctx.cfg.retrain
    seed_everything(derive_seed(cfg.seed, "retrain-init", label))
    model = ctx.build(widths, precision=precision)
    train_seed = seeds.split_seed(label)[1]
    trained = train_model(ctx, model, rcfg, label, seed=seeds.data_seed(ctx.seed, train_seed))
    entry = {"widths": list(model.widths), "precision": precision,
             **{k: trained[k] for k in ("val_accuracy", "test_accuracy", "train_s")}, **ctx.energy(model)}
    # every crossbar-mapped model (searched, Pareto, U-kx, 8-bit) gets the same robustness trials (same seeds: a
    # paired comparison, HAWIS Fig. 3 from one run) and every model its checkpoint (`checkpoint_name`); of a model
    # trained with several seeds (retrain.seeds), training seed 0 only
    if label == "searched":
        entry["energy_detail"] = energy_detail(ctx, model)  # the reports' energy breakdown and crossbar fill
    if train_seed > 0:
        return {"entry": entry, "checkpoint": None}
    if precision != "float" and rcfg.robustness and cfg.defects.trials > 0:
        entry["robustness"] = robustness_summary(ctx, model)
    checkpoint = model_payload(model, dataset=ctx.splits.info(), config=to_dict(cfg), epoch=rcfg.epochs,
                               optimizer=trained["optimizer"], scheduler=trained["scheduler"], metrics=entry)
    return {"entry": entry, "checkpoint": checkpoint}


def checkpoint_name(label: str) -> str:
    """The stage-C model's file under checkpoints/: final_model.pt for the searched one, model_<label>.pt else."""
    return "final_model.pt" if label == "searched" else f"model_{label}.pt"


def _store(ctx: Context, results: dict, label: str, out: dict) -> None:
    """Write one finished model: its checkpoint (the searched one), stage_c.json, the log line."""
    run, entry = ctx.run, out["entry"]
    for line in out.get("log", []):
        run.log(line, echo=False)
    if out["checkpoint"] is not None:
        run.save(checkpoint_name(label), out["checkpoint"])
    results[label] = entry
    if seeds.split_seed(label)[1] > 0:  # stage_c.json keeps one entry per model (training seed 0)
        run.write_result(seeds.SEEDS_FILE, {k: v for k, v in results.items() if seeds.split_seed(k)[1] > 0})
    else:
        run.write_result(RESULTS, {k: v for k, v in results.items() if seeds.split_seed(k)[1] == 0})
    if at_chance(entry["test_accuracy"], ctx.splits.num_classes, len(ctx.splits.test)):
        run.log(f"warning: stage C {label} is at chance ({pct(entry['test_accuracy'])} test accuracy for "
                f"{ctx.splits.num_classes} classes): it learned nothing; train longer (retrain.epochs) or check lr")
    run.log(f"stage C {label}: val acc {pct(entry['val_accuracy'])}, test acc {pct(entry['test_accuracy'])}, "
            f"energy {uj(entry['energy_uj'])}")


class _Lines:
    """A worker's stand-in for the run folder's log: the lines go back with the result."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, msg: str, echo: bool = True) -> None:
        self.lines.append(msg)


def _retrain_task(label: str, job: tuple, ctx: Context) -> dict:
    wctx = replace(ctx, run=_Lines(), device=resolve_device(ctx.cfg.device))
    out = retrain_job(wctx, label, *job)
    return {**out, "log": wctx.run.lines}


def _plan(ctx: Context, records: list[dict] | None) -> tuple[dict, dict, dict]:
    """Rank 0: (the searched model's record, the stage_c.json results so far, {label: (widths, precision)} of
    the models still to train)."""
    best, jobs = jobs_for(ctx, records)
    results: dict = {k: v for name in (RESULTS, seeds.SEEDS_FILE) if ctx.run.has(name)
                     for k, v in ctx.run.read_result(name).items()}
    return best, results, {label: (widths, precision) for label, widths, precision in jobs if label not in results}


def stage_retrain(ctx: Context, records: list[dict] | None = None, parallel: Parallelism | None = None) -> dict:
    """Stage C: retrain the best widths (and optionally Pareto points, U-kx and references). With `parallel`
    (several workers or a Ray address) the models train on Ray workers at once; stage_c.json gets them in job
    order as they finish (a kill loses no written model; a resume skips them), the same as one worker.

    Under torchrun the models train one after another, each data-parallel over the ranks (fit's DDP path);
    rank 0 decides which are left and writes every result, the other ranks return {}. Every rank evaluates
    and measures robustness itself (the same weights and trial seeds give the same numbers), so none waits
    at a collective while rank 0 works alone. Ray workers and torchrun do not mix."""
    cfg, run = ctx.cfg, ctx.run
    lead = distributed.is_rank0()
    with distributed.rank0_section():
        plan = _plan(ctx, records) if lead else None
    todo = distributed.share(plan[2] if lead else None)
    best, results = plan[:2] if lead else (None, {})
    if parallel is not None and not parallel.in_process and todo:
        check(not distributed.active(), TORCHRUN_AND_RAY)
        done = run_tasks(_retrain_task, todo, shared=replace(ctx, run=None), desc="stage C",
                         progress=cfg.retrain.progress, on_result=lambda label, out: _store(ctx, results, label, out),
                         **parallel.kwargs())
        run.record_execution(stage="retrain", **done.execution)
    for label, (widths, precision) in todo.items():
        if label not in results:
            out = retrain_job(ctx, label, widths, precision)
            with distributed.rank0_section():
                if lead:
                    _store(ctx, results, label, out)
            distributed.share(label)  # a failed write on rank 0 stops every rank here
    if not lead:
        return {}
    if cfg.retrain.seeds > 1 or cfg.retrain.aligned_baseline:
        _seed_comparison(ctx, results, best)
    final = dict(results["searched"])
    metrics = ("episode", "reward", "accuracy", "energy_uj") + (("reranked", "search_reward", "search_rank")
                                                                 if best.get("reranked") else ())
    final.update({"source": best["source"], "search_metrics": {k: best.get(k) for k in metrics}})
    final["uniform_energy_uj"] = uniform_energies(ctx)
    ks = sorted({float(k) for k in range(1, int(math.ceil(cfg.space.r_max)) + 1)} | {cfg.report.compare_uniform})
    final["uniform_widths"] = {f"U-{k:g}x": ctx.uniform(k) for k in ks}  # for the reports (Fig. 5)
    if "seed_comparison" in best:
        final["aligned_uniform"] = best.get("aligned_uniform")
        final["seed_comparison"] = best["seed_comparison"]
        run.log(best["seed_comparison"]["sentence"])
    run.write_result("final.json", final)
    return final


def _seed_comparison(ctx: Context, results: dict, best: dict) -> None:
    """Each model's seed_runs into stage_c.json (several seeds), the verdict into `best` (seeds.compare)."""
    n = ctx.cfg.retrain.seeds
    runs = seeds.seed_runs(results, n)
    if n > 1:
        for label, r in runs.items():
            results[label]["seed_runs"] = r
        ctx.run.write_result(RESULTS, {k: v for k, v in results.items() if seeds.split_seed(k)[1] == 0})
    au = best.get("aligned_uniform")
    baselines = [au["label"] if au and au["widths"] != list(best["widths"]) else None, "U-1x"]
    best["seed_comparison"] = seeds.compare(runs, [b for b in baselines if b])
    if au and au["widths"] == list(best["widths"]):
        sc = best["seed_comparison"]  # still one sentence
        sc["sentence"] = sc["sentence"][:-1] + "; the searched net fills its crossbars: its own aligned-uniform net."


#: per-layer fields of `estimate_model` kept in final.json's energy_detail (the HTML report reads them)
DETAIL_FIELDS = ("name", "kind", "in_channels", "out_channels", "crossbars", "tiles", "utilization", "energy_uj",
                 "energy_pj", "latency_us")


def energy_detail(ctx: Context, model: nn.Module) -> dict:
    """Energy per component (µJ) and per layer (per-component pJ, crossbars, fill = used / allocated cells) of
    `model` on the run's crossbar spec: the same estimate as `ctx.energy` (cimnas.hardware.energy.estimate)."""
    est = estimate_model(model, ctx.input_shape, ctx.spec)
    return {"components_uj": dict(est["energy_components_uj"]),
            "layers": [{k: r[k] for k in DETAIL_FIELDS} for r in est["layers"]]}


def uniform_energies(ctx: Context) -> dict[str, float]:
    """Energy of U-1x ... U-(ceil r_max)x (no training; the models are built on the meta device)."""
    return {f"U-{k}x": ctx.energy(ctx.build(ctx.uniform(k), meta=True))["energy_uj"]
            for k in range(1, int(math.ceil(ctx.cfg.space.r_max)) + 1)}


def robustness_summary(ctx: Context, model: nn.Module) -> dict:
    """Monte-Carlo accuracy of the final model under `defects` on the test split (cimnas.stats.summarize)."""
    d = ctx.cfg.defects
    accs = mc_accuracies(ctx, model, ctx.splits.test, d.trials, derive_seed(ctx.seed, "final-mc"))
    s = summarize(accs)
    return {"sa0_rate": d.sa0_rate, "sa1_rate": d.sa1_rate, "variation_sigma": d.variation_sigma, "trials": s["n"],
            **{k: s[k] for k in ("mean", "std", "min", "p5", "median", "max")}}
