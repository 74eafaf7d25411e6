"""Run-level UAE output-change analysis: train (or load) a model, analyse one input, write the
run folder; and the UAE Table 1 reproduction (several models x initialisations).

The maths lives in `cimnas.uae.analysis`; this module wires it to datasets, models, training and
files. Each (model, seed) analysis is a function of its inputs returning plain data, so it can be
sent to a worker unchanged (DESIGN.md, "ready to scale out").
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimnas.errors import CimnasError, check
from cimnas.uae.analysis import NOISE_MODES, gaussian_fit_stats, output_change

MODEL_ALIASES = {"lenet": "lenet5", "mlp-relu": "mlp", "mlp-sigmoid": "mlp"}

#: UAE Table 1 (chi2 x1e-2, MSE x1e-4), averaged over 3 initialisations and the 10 outputs.
PAPER_TABLE1 = {
    "MLP-ReLU": ("MNIST", 5.22, 3.20), "MLP-Sigmoid": ("MNIST", 5.81, 2.20), "LeNet": ("MNIST", 4.59, 2.67),
    "Float-Conv": ("CIFAR-10", 7.01, 3.03), "Fixed-Conv": ("CIFAR-10", 6.79, 2.74),
    "ResNet-56": ("CIFAR-10", 4.56, 1.79), "ResNet-110": ("CIFAR-10", 4.81, 2.01),
}


# ---------------------------------------------------------------- settings
@dataclass
class AnalysisSettings:
    """Monte-Carlo and fit settings of one output-change analysis (UAE Sec. 3.2)."""

    samples: int = 10_000  # S noise samples (paper: 10k)
    sigma: float = 0.04  # std of the weight noise (paper: 0.04, absolute weight units)
    mode: str = "absolute"  # absolute | relative | bitsliced (cimnas.uae.analysis)
    bins: int = 100  # N of Eq. 5-6 (paper: 100)
    span: float = 4.0  # bins cover mean +- span * std; tails folded into the end bins
    cell_bits: int = 4  # bitsliced mode: bits per device
    input_index: int = 0  # which test image is the fixed input I
    seed: int = 0  # noise seed

    def validate(self) -> None:
        check(self.samples >= 2, f"samples must be >= 2, got {self.samples}")
        check(self.sigma >= 0, f"sigma must be >= 0 (a standard deviation), got {self.sigma}")
        check(self.mode in NOISE_MODES, f"unknown noise mode {self.mode!r}; valid: {', '.join(NOISE_MODES)}")
        check(self.bins >= 2, f"bins must be >= 2, got {self.bins}")
        check(self.span > 0, f"span must be > 0, got {self.span}")
        check(self.cell_bits >= 1, f"cell_bits must be >= 1, got {self.cell_bits}")
        check(self.input_index >= 0, f"input_index must be >= 0, got {self.input_index}")


@dataclass
class TrainSettings:
    """Plain SGD training before the analysis (small budgets for a CPU)."""

    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0

    def validate(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")


# ---------------------------------------------------------------- models
def canonical_model(name: str) -> str:
    return MODEL_ALIASES.get(name, name)


def build_analysis_model(name: str, splits: Any, model_kwargs: dict | None = None,
                         float_quantizers: bool = False) -> nn.Module:
    """Build `name` for `splits` via cimnas.nn.models.build_model; `float_quantizers` replaces
    every quantizer by identity (the Float-Conv twin of the fixed-point CNN)."""
    from cimnas.nn.layers import quant_layers
    from cimnas.nn.models import build_model
    from cimnas.nn.quantizers import Identity

    model = build_model(canonical_model(name), in_channels=splits.in_channels, num_classes=splits.num_classes,
                        image_size=splits.image_size, **(model_kwargs or {}))
    if float_quantizers:
        for _, layer in quant_layers(model):
            layer.input_quantizer, layer.weight_quantizer = Identity(), Identity()
    return model


def train_model(model: nn.Module, splits: Any, train: TrainSettings, seed: int, progress: bool = True) -> dict:
    """Train on `splits.train` with SGD (cimnas.train); returns the last epoch's log and test accuracy."""
    from cimnas.train import evaluate, make_optimizer, train_epoch
    from cimnas.utils.seed import make_generator

    opt = make_optimizer(model, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, train.epochs))
    gen = make_generator(seed)
    log: dict = {}
    for epoch in range(train.epochs):
        log = train_epoch(model, splits.train, opt, batch_size=train.batch_size, generator=gen, device="cpu",
                          progress=progress, desc=f"train {epoch + 1}/{train.epochs}")
        sched.step()
    log["test_acc"] = evaluate(model, splits.test)
    return log


def pick_input(splits: Any, index: int) -> tuple[torch.Tensor, int]:
    """The fixed input I = test image `index` as a batch of one, and its label."""
    n = len(splits.test)
    check(0 <= index < n, f"input index {index} is outside the test set (0..{n - 1}); pick a smaller --input-index")
    x, y = splits.test.subset(torch.tensor([index])).tensors()
    return x, int(y[0])


def analyze(model: nn.Module, x: torch.Tensor, s: AnalysisSettings, progress: bool = False) -> dict:
    """Output change of `model` at input `x` (Eq. 3-4) and its Gaussian fit (Eq. 5-6), as plain data;
    `values` (S, n_out) is returned too for plotting."""
    t0 = time.perf_counter()
    values = output_change(model, x, s.sigma, s.samples, s.mode, s.seed, cell_bits=s.cell_bits, progress=progress)
    t_mc = time.perf_counter() - t0
    fit = gaussian_fit_stats(values, s.bins, s.span)
    return {**fit.to_dict(), "sigma": s.sigma, "mode": s.mode, "seconds_monte_carlo": t_mc, "values": values}


# ---------------------------------------------------------------- Table 1
@dataclass
class Table1Row:
    """One model row of UAE Table 1."""

    label: str = "LeNet"
    model: str = "lenet5"
    data: str = "small"  # small (Fashion-MNIST / MNIST / digits) | cifar10 (only with a CIFAR-10 path)
    kwargs: dict[str, Any] = field(default_factory=dict)  # build_model keywords
    float_quantizers: bool = False  # strip all quantizers (Float-Conv)


@dataclass
class Table1Config:
    """UAE Table 1 reproduction at configurable scale (configs/uae/table1.yaml)."""

    dataset: str = "fashion-mnist"  # the 'small' dataset (paper: MNIST)
    data_dir: str | None = None
    fallback_dataset: str = "digits"  # used (and noted) when `dataset` cannot be loaded
    cifar10_dir: str | None = None  # CIFAR-10 rows run only when this is given
    train_limit: int | None = 10_000  # training images used (None = all)
    test_limit: int | None = 2_000
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # initialisations
    train: TrainSettings = field(default_factory=TrainSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    rows: list[Table1Row] = field(default_factory=list)

    def validate(self) -> None:
        check(len(self.seeds) >= 1, "seeds must list at least one initialisation seed")
        check(len(self.rows) >= 1, "rows must list at least one model")
        for r in self.rows:
            check(r.data in ("small", "cifar10"), f"row {r.label!r}: data must be small or cifar10, got {r.data!r}")


def _load_small(cfg: Table1Config) -> tuple[Any, str]:
    from cimnas.data import load_dataset

    try:
        return load_dataset(cfg.dataset, cfg.data_dir, seed=0, limit=cfg.train_limit,
                            test_limit=cfg.test_limit), cfg.dataset
    except CimnasError as e:
        if cfg.fallback_dataset in ("", cfg.dataset):
            raise
        note = f"{cfg.fallback_dataset} (fallback: {cfg.dataset} could not be loaded: {e})"
        return load_dataset(cfg.fallback_dataset, None, seed=0, limit=cfg.train_limit,
                            test_limit=cfg.test_limit), note


def run_one(row: Table1Row, splits: Any, seed: int, cfg: Table1Config, progress: bool = True) -> dict:
    """Train one initialisation of one row and analyse it; plain data out."""
    from cimnas.utils.seed import seed_everything

    seed_everything(seed)
    model = build_analysis_model(row.model, splits, row.kwargs, row.float_quantizers)
    t0 = time.perf_counter()
    log = train_model(model, splits, cfg.train, seed, progress)
    t_train = time.perf_counter() - t0
    x, label = pick_input(splits, cfg.analysis.input_index)
    res = analyze(model, x, dataclasses.replace(cfg.analysis, seed=cfg.analysis.seed + seed), progress)
    res.pop("values")
    return {"label": row.label, "seed": seed, "test_acc": log["test_acc"], "seconds_train": t_train,
            "input_label": label, "chi2_mean": res["chi2_mean"], "mse_mean": res["mse_mean"],
            "seconds_monte_carlo": res["seconds_monte_carlo"], "chi2": res["chi2"], "mse": res["mse"]}


def _sd(t: torch.Tensor) -> float:
    return float(t.std(correction=1)) if t.numel() > 1 else 0.0


def aggregate(runs: list[dict], rows: list[Table1Row]) -> list[dict]:
    """Average chi2 / MSE (already averaged over the outputs) over initialisations, per row."""
    out = []
    for r in rows:
        rs = [x for x in runs if x["label"] == r.label]
        if not rs:
            continue
        c = torch.tensor([x["chi2_mean"] for x in rs], dtype=torch.float64)
        m = torch.tensor([x["mse_mean"] for x in rs], dtype=torch.float64)
        a = torch.tensor([x["test_acc"] for x in rs], dtype=torch.float64)
        out.append({"label": r.label, "runs": len(rs), "chi2": float(c.mean()), "chi2_sd": _sd(c),
                    "mse": float(m.mean()), "mse_sd": _sd(m), "test_acc": float(a.mean())})
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


def run_table1(cfg: Table1Config, out: Path, progress: bool = True) -> dict:
    """Run every (row, seed) not yet in out/runs.jsonl, then write table1.json and table1.md."""
    from cimnas.config import to_dict
    from cimnas.utils.io import append_jsonl, atomic_write_bytes, read_json, read_jsonl, write_json

    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        check(read_json(cfg_path) == to_dict(cfg),
              f"{out} holds a Table 1 run with a different config; use another --out")
    else:
        write_json(cfg_path, to_dict(cfg))
    done = {(r["label"], r["seed"]) for r in read_jsonl(out / "runs.jsonl")} if (out / "runs.jsonl").exists() else set()
    notes: list[str] = []
    datasets: dict[str, str] = {}
    small = cifar = None
    for row in cfg.rows:
        if row.data == "cifar10":
            if cfg.cifar10_dir is None:
                notes.append(f"{row.label}: skipped (CIFAR-10 row; give cifar10_dir to run it)")
                continue
            if cifar is None:
                from cimnas.data import load_dataset

                cifar = (load_dataset("cifar10", cfg.cifar10_dir, seed=0, limit=cfg.train_limit,
                                      test_limit=cfg.test_limit), "cifar10")
            splits, dname = cifar
        else:
            if small is None:
                small = _load_small(cfg)
            splits, dname = small
        datasets[row.label] = dname.split(" ")[0]
        if dname.startswith(cfg.fallback_dataset) and "fallback" in dname and dname not in notes:
            notes.append(dname)
        for seed in cfg.seeds:
            if (row.label, seed) in done:
                continue
            rec = run_one(row, splits, seed, cfg, progress)
            rec["dataset"] = datasets[row.label]
            append_jsonl(out / "runs.jsonl", rec)
    runs = read_jsonl(out / "runs.jsonl") if (out / "runs.jsonl").exists() else []
    agg = aggregate(runs, cfg.rows)
    result = {"rows": agg, "notes": notes, "datasets": datasets, "paper": PAPER_TABLE1,
              "bins": cfg.analysis.bins, "samples": cfg.analysis.samples, "sigma": cfg.analysis.sigma,
              "mode": cfg.analysis.mode}
    write_json(out / "table1.json", result)
    atomic_write_bytes(out / "table1.md", table1_markdown(agg, notes, datasets).encode())
    return result
