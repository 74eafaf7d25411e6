"""`cimnas uae table1`: UAE Table 1 (Gaussian fit of the output change of several models x initialisations).

Run folder (`cimnas.runs.RunFolder`, kind "uae-table1"): config.yaml, runs.jsonl (one line per finished
(row, seed)), table1.json, table1.md. Re-running needs `--resume` and continues with the (row, seed) pairs not yet
in runs.jsonl; a resume may add seeds. Each (row, seed) is a function of its inputs returning plain data
(`run_one`), so it can be sent to a worker unchanged.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from cimnas.errors import CimnasError
from cimnas.pipelines.uae.analysis_run import analyze, build_analysis_model, load_splits, pick_input, train_model
from cimnas.pipelines.uae.config import TABLE1_RESUMABLE, Table1Config, Table1Row
from cimnas.runs import RunFolder
from cimnas.stats import summarize
from cimnas.utils.io import atomic_write_bytes
from cimnas.utils.seed import resolve_device

KIND = "uae-table1"

#: UAE Table 1 (chi2 x1e-2, MSE x1e-4), averaged over 3 initialisations and the 10 outputs.
PAPER_TABLE1 = {
    "MLP-ReLU": ("MNIST", 5.22, 3.20), "MLP-Sigmoid": ("MNIST", 5.81, 2.20), "LeNet": ("MNIST", 4.59, 2.67),
    "Float-Conv": ("CIFAR-10", 7.01, 3.03), "Fixed-Conv": ("CIFAR-10", 6.79, 2.74),
    "ResNet-56": ("CIFAR-10", 4.56, 1.79), "ResNet-110": ("CIFAR-10", 4.81, 2.01),
}


def _load_small(cfg: Table1Config) -> tuple[Any, str]:
    try:
        return load_splits(cfg.data, cfg.seed), cfg.data.name
    except CimnasError as e:
        if cfg.fallback_dataset in ("", cfg.data.name):
            raise
        note = f"{cfg.fallback_dataset} (fallback: {cfg.data.name} could not be loaded: {e})"
        sys.stderr.write(f"cimnas: warning: {cfg.data.name} could not be loaded ({e}); Table 1 runs on "
                         f"{cfg.fallback_dataset} instead (fallback_dataset)\n")
        data = dataclasses.replace(cfg.data, name=cfg.fallback_dataset, data_dir=None, options={})
        return load_splits(data, cfg.seed), note


def run_one(row: Table1Row, splits: Any, seed: int, cfg: Table1Config, device: Any = "cpu",
            progress: bool = False) -> dict:
    """Train one initialisation of one row and analyse it; plain data out."""
    model = build_analysis_model(row.model, splits, row.kwargs, row.float_quantizers, seed=seed)
    t0 = time.perf_counter()
    log = train_model(model, splits, cfg.train, seed, resolve_device(str(device)))
    t_train = time.perf_counter() - t0
    x, label = pick_input(splits, cfg.analysis.input_index)
    res = analyze(model.cpu(), x, cfg.noise, cfg.analysis, seed=cfg.analysis.seed + seed, progress=progress)
    return {"label": row.label, "seed": seed, "test_acc": log["test_acc"], "seconds_train": t_train,
            "input_label": label, "chi2_mean": res["chi2_mean"], "mse_mean": res["mse_mean"],
            "seconds_monte_carlo": res["seconds_monte_carlo"], "chi2": res["chi2"], "mse": res["mse"]}


def aggregate(runs: list[dict], rows: list[Table1Row]) -> list[dict]:
    """Average chi2 / MSE (already averaged over the outputs) over initialisations, per row (cimnas.stats)."""
    out = []
    for r in rows:
        rs = [x for x in runs if x["label"] == r.label]
        if not rs:
            continue
        c = summarize([x["chi2_mean"] for x in rs])
        m = summarize([x["mse_mean"] for x in rs])
        a = summarize([x["test_acc"] for x in rs])
        out.append({"label": r.label, "runs": len(rs), "chi2": c["mean"], "chi2_sd": c["std"],
                    "mse": m["mean"], "mse_sd": m["std"], "test_acc": a["mean"]})
    return out


def table1_markdown(agg: list[dict], notes: list[str], datasets: dict[str, str]) -> str:
    lines = ["| Model | Dataset (ours) | chi2 (1e-2) ours | chi2 (1e-2) paper | MSE (1e-4) ours | MSE (1e-4) paper"
             " | test acc | inits |", "|---|---|---|---|---|---|---|---|"]
    for a in agg:
        p = PAPER_TABLE1.get(a["label"])
        pc, pm = (f"{p[1]:.2f}", f"{p[2]:.2f}") if p else ("-", "-")
        lines.append(f"| {a['label']} | {datasets.get(a['label'], '?')} | {100 * a['chi2']:.2f} +- "
                     f"{100 * a['chi2_sd']:.2f} | {pc} | {1e4 * a['mse']:.4f} +- {1e4 * a['mse_sd']:.4f} | {pm} | "
                     f"{a['test_acc']:.3f} | {a['runs']} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def run_table1(cfg: Table1Config, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Run every (row, seed) not yet in runs.jsonl, then write table1.json and table1.md."""
    with RunFolder.open(out, KIND, cfg, resume=resume, resumable=TABLE1_RESUMABLE, config_cls=Table1Config) as run:
        if run.resumed:
            run.write_config(cfg)
        done = {(r["label"], r["seed"]) for r in run.records("runs.jsonl")}
        notes: list[str] = []
        datasets: dict[str, str] = {}
        small = cifar = None
        for row in cfg.rows:
            if row.data == "cifar10":
                if cfg.cifar10_dir is None:
                    notes.append(f"{row.label}: skipped (CIFAR-10 row; give cifar10_dir to run it)")
                    continue
                if cifar is None:
                    cifar = (load_splits(dataclasses.replace(cfg.data, name="cifar10", data_dir=cfg.cifar10_dir,
                                                             options={}), cfg.seed), "cifar10")
                splits, dname = cifar
            else:
                if small is None:
                    small = _load_small(cfg)
                splits, dname = small
            datasets[row.label] = dname.split(" ")[0]
            if "fallback" in dname and dname not in notes:
                notes.append(dname)
            for seed in cfg.seeds:
                if (row.label, seed) in done:
                    continue
                if progress:
                    sys.stderr.write(f"table1: {row.label}, init {cfg.seeds.index(seed) + 1}/{len(cfg.seeds)} on "
                                     f"{datasets[row.label]}: training {cfg.train.epochs} epochs, then "
                                     f"{cfg.analysis.samples} noise samples\n")
                rec = run_one(row, splits, seed, cfg, cfg.device, progress)
                rec["dataset"] = datasets[row.label]
                run.append("runs.jsonl", rec)
        runs = [r for r in run.records("runs.jsonl") if r["seed"] in cfg.seeds]
        agg = aggregate(runs, cfg.rows)
        result = {"rows": agg, "notes": notes, "datasets": datasets, "paper": PAPER_TABLE1,
                  "bins": cfg.analysis.bins, "samples": cfg.analysis.samples,
                  "gaussian_sigma": cfg.noise.gaussian_sigma,
                  "gaussian_mode": cfg.noise.gaussian_mode}
        run.write_result("table1.json", result)
        atomic_write_bytes(run.path("table1.md"), table1_markdown(agg, notes, datasets).encode())
        return result
