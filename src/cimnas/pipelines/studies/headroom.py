"""Headroom: can any width allocation beat uniform widening, before any search is run? (HAWIS, issue 12)

The study trains, from scratch and with several seeds each, the uniform U-kx networks and hand-made non-uniform
allocations scaled to the energy of a chosen U-kx, all with one `cimnas train` config (`base`), and compares each
allocation with the uniform accuracy-energy curve at its energy. If no allocation beats the curve by more than its
spread, no width search can win in that regime; if one does, a search must find it.

Allocation shapes (ResNet widths come in groups of equal base width: stem + stage 1, stage 2, stage 3):
`group_mult` gives one multiplier per group (wide-first [2, 1, 0.5], wide-last [0.5, 1, 2], wide-middle
[0.75, 2, 0.75]); `named` takes the shape of a published width vector (`hawis-a`: HAWIS-A widths / base widths).
Each shape is multiplied by the one factor that brings its crossbar energy closest to U-`match`x's energy
(widths rounded to multiples of `d`, Eq. 8).

The curve at an allocation's energy E is the linear interpolation in log-energy between the two uniform points
around E; the difference (allocation - curve) gets a t interval over both samples (`cimnas.stats.combination_ci`).
Test accuracy is each model's final number (read once per model); validation accuracy (held-out training data) is
reported beside it.

Study folder: config.yaml, run.log, runs/<label>/seed<k>/ (one `cimnas train` run folder per model, each resumable),
headroom.json, headroom.md, figures/headroom.png. `python -m cimnas.pipelines.studies.headroom CONFIG OUT`
(re-run to resume: finished models are read from their folders).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cimnas.cli import STUDY_INTERRUPTED, HelpFormatter, OneLineParser, doc_summary, guarded
from cimnas.config import diff_configs, load_config, to_dict
from cimnas.errors import check
from cimnas.hardware.crossbar import HardwareConfig
from cimnas.hardware.energy import estimate_arch
from cimnas.nn.models import build_model, named_widths
from cimnas.nn.refactor import RefactorOptions
from cimnas.nn.widths import round_channels, width_groups
from cimnas.parallel import Parallelism, add_parallel_args, parallelism_from_args, run_tasks
from cimnas.pipelines.train import TrainRunConfig, load_splits, run_training
from cimnas.reports.figures import finish
from cimnas.runs import RunFolder
from cimnas.stats import combination_ci, summarize
from cimnas.utils.io import read_json
from cimnas.utils.units import pct, uj

KIND = "study-headroom"
#: which models a study holds may change on resume (each model is its own run folder, checked when reused)
RESUMABLE = ("uniform", "uniform_seeds", "allocations", "allocation_seeds", "base.train.progress")


def check_label(name: str, what: str) -> None:
    """A model label is a folder (runs/<name>/seed<k>): '' or '../x' would write beside or outside runs/."""
    check(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) is not None,
          f"{what} {name!r} is not a folder name (letters, digits, _ . -, not starting with . or -)")


@dataclass
class AllocationConfig:
    """One hand-made width allocation, scaled to a uniform network's energy."""

    name: str = "wide-first"
    group_mult: list[float] = field(default_factory=list)  # one multiplier per group of equal base width
    named: str | None = None  # or: the shape of a named width vector of the model (e.g. hawis-a)
    match: float = 1.0  # scaled to the crossbar energy of U-<match>x

    def validate(self) -> None:
        check_label(self.name, "allocation name")
        check(bool(self.group_mult) != (self.named is not None),
              f"allocation {self.name!r}: give exactly one of group_mult or named")
        check(all(0 < m <= 16 for m in self.group_mult), f"allocation {self.name!r}: multipliers must be in (0, 16]")
        check(0 < self.match <= 16, f"allocation {self.name!r}: match must be in (0, 16], got {self.match}")


@dataclass
class HeadroomConfig:
    """Root config of the headroom study (configs/studies/headroom_*.yaml)."""

    base: TrainRunConfig = field(default_factory=TrainRunConfig)  # one model's training (cimnas train)
    uniform: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.5, 2.0])  # U-kx multipliers
    uniform_seeds: int = 5
    allocations: list[AllocationConfig] = field(default_factory=list)
    allocation_seeds: int = 3
    d: int = 4  # channel granularity (Eq. 8)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)  # crossbar spec (cimnas presets)

    def validate(self) -> None:
        check(len(self.uniform) >= 2 and all(0 < k <= 16 for k in self.uniform),
              "uniform: give at least two width multipliers in (0, 16]")
        check(self.uniform == sorted(set(self.uniform)), "uniform: multipliers must be increasing")
        check(1 <= self.uniform_seeds <= 100 and 1 <= self.allocation_seeds <= 100, "seeds must be in 1..100")
        check(1 <= self.d <= 64, f"d must be in 1..64, got {self.d}")
        names = [a.name for a in self.allocations]
        check(len(names) == len(set(names)), "allocation names must be unique")
        taken = sorted(set(names) & {f"U-{k:g}x" for k in self.uniform})
        check(not taken, f"allocation name {taken[0] if taken else ''!r} is the label of a uniform network; "
              "rename the allocation")
        check(self.base.model.precision == "binary", "the headroom study compares binarized networks: "
              "base.model.precision must be binary")


# ---------------------------------------------------------------------------- widths and energy
class Geometry:
    """Base widths, groups and energy of the base model on the dataset's shape (nothing is trained here)."""

    def __init__(self, cfg: HeadroomConfig, splits: Any):
        m = cfg.base.model
        self.cfg, self.model_name = cfg, m.name
        self.input_shape = (splits.in_channels, splits.image_size, splits.image_size)
        self.num_classes = splits.num_classes
        with torch.device("meta"):
            probe = build_model(m.name, in_channels=splits.in_channels, num_classes=splits.num_classes,
                                image_size=splits.image_size, precision="float", **m.options)
        self.base = [int(w) for w in probe.base_widths]
        self.groups = width_groups(self.base)
        self.refactor = RefactorOptions(topology_mod=m.topology_mod, thermometer=m.thermometer,
                                        thermometer_levels=m.thermometer_levels)
        self.spec = cfg.hardware.spec(("energy",))

    def uniform(self, k: float) -> list[int]:
        return [round_channels(b * k, self.cfg.d) for b in self.base]

    def energy(self, widths: list[int]) -> float:
        est = estimate_arch(self.model_name, self.spec, widths=widths, precision="binary",
                            input_shape=self.input_shape, num_classes=self.num_classes, refactor=self.refactor,
                            **self.cfg.base.model.options)
        return float(est["energy_uj"])

    def shape(self, a: AllocationConfig) -> list[float]:
        """Per-layer multipliers of an allocation before scaling."""
        if a.named is not None:
            return [w / b for w, b in zip(named_widths(self.model_name, a.named), self.base, strict=True)]
        check(len(a.group_mult) == len(self.groups), f"allocation {a.name!r}: {len(a.group_mult)} multipliers for "
              f"{len(self.groups)} groups of equal base width ({[len(g) for g in self.groups]} layers)")
        per = [0.0] * len(self.base)
        for mult, group in zip(a.group_mult, self.groups, strict=True):
            for i in group:
                per[i] = mult
        return per

    def matched(self, a: AllocationConfig) -> tuple[list[int], float, float]:
        """(widths, energy, target energy): the scaled shape whose energy is closest to U-`match`x's."""
        target = self.energy(self.uniform(a.match))
        shape = self.shape(a)

        def widths(s: float) -> list[int]:
            return [round_channels(b * m * s, self.cfg.d) for b, m in zip(self.base, shape, strict=True)]

        lo, hi = 1e-3, 64.0
        for _ in range(40):  # energy grows with the scale factor: bisect on log-energy
            mid = math.sqrt(lo * hi)
            if self.energy(widths(mid)) < target:
                lo = mid
            else:
                hi = mid
        best = min({tuple(widths(s)) for s in (lo, hi)}, key=lambda w: abs(math.log(self.energy(list(w)) / target)))
        return list(best), self.energy(list(best)), target


# ---------------------------------------------------------------------------- the study
def plan(cfg: HeadroomConfig, geo: Geometry) -> list[dict]:
    """Every model of the study: label, widths, energy, seeds."""
    jobs = [{"label": f"U-{k:g}x", "kind": "uniform", "k": k, "widths": geo.uniform(k),
             "seeds": list(range(cfg.uniform_seeds))} for k in cfg.uniform]
    for a in cfg.allocations:
        widths, _, target = geo.matched(a)
        jobs.append({"label": a.name, "kind": "allocation", "match": a.match, "target_energy_uj": target,
                     "widths": widths, "seeds": list(range(cfg.allocation_seeds))})
    for j in jobs:
        j["energy_uj"] = geo.energy(j["widths"])
    return jobs


def model_dir(root: Path, label: str, seed: int) -> Path:
    """The `cimnas train` run folder of one model of the study."""
    return root / "runs" / label / f"seed{seed}"


def write_tables(run: RunFolder, jobs: list[dict]) -> dict:
    """headroom.json and headroom.md of the models finished so far; returns the analysis."""
    result = analyse(jobs)
    run.write_result("headroom.json", result)
    (run.root / "headroom.md").write_text(table(result))
    return result


def train_one(task_id: tuple[str, int], payload: dict, shared: Any) -> dict:
    """One model of the study (a `cimnas.parallel` task): trained in its own resumable `cimnas train` run folder
    under the study folder; returns its final.json. A pure function of (config, widths, seed)."""
    label, seed = task_id
    cfg, job, root = shared["cfg"], payload, Path(shared["root"])
    model = dataclasses.replace(cfg.base.model, widths=list(job["widths"]), width_mult=1.0)
    run_cfg = dataclasses.replace(cfg.base, model=model, seed=seed)
    out = model_dir(root, label, seed)
    if (out / "final.json").is_file():  # finished: reuse it if it is the same model and budget
        stored = RunFolder(out, "train").stored_config(TrainRunConfig)
        diff = diff_configs(stored, to_dict(run_cfg))
        check(not diff, f"{out} holds a model trained with other settings ({', '.join(diff[:3])}); give the "
              "allocation another name or remove that folder")
        return read_json(out / "final.json")
    return run_training(run_cfg, out, resume=True)


def run_study(cfg: HeadroomConfig, out: str | Path, *, resume: bool = True, par: Parallelism | None = None) -> dict:
    """Train every model of the study (in parallel on Ray workers with `par`) and write the comparison."""
    par = par or Parallelism()
    run = RunFolder.open(out, KIND, cfg, resume=resume, config_cls=HeadroomConfig, resumable=RESUMABLE)
    try:
        splits = load_splits(cfg.base.data, cfg.base.seed, torch.device("cpu"))
        geo = Geometry(cfg, splits)
        jobs = plan(cfg, geo)
        run.log(f"headroom: {sum(len(j['seeds']) for j in jobs)} models ({len(jobs)} widths), "
                f"U-1x energy {uj(geo.energy(geo.uniform(1.0)))}")
        by_label = {j["label"]: j for j in jobs}
        for j in jobs:
            j["runs"] = []

        def done(task_id: tuple[str, int], final: dict) -> None:
            label, seed = task_id
            by_label[label]["runs"].append({"seed": seed, "test_acc": final["test_acc"],
                                            "val_acc": final.get("val_acc")})
            val = final.get("val_acc")
            run.log(f"{label} seed {seed}: test {pct(final['test_acc'])} val " + ("-" if val is None else pct(val)))
            write_tables(run, jobs)  # after every model: a kill keeps the table of what finished (rank-check reads it)

        tasks = {(j["label"], seed): {"widths": j["widths"]} for j in jobs for seed in j["seeds"]}
        # finished models first: on a resume they are read back at once, so headroom.json holds every finished
        # model before the first new one trains (runs are sorted by seed in `analyse`: the order leaves no trace)
        finished = {t for t in tasks if (model_dir(run.root, *t) / "final.json").is_file()}
        tasks = {t: tasks[t] for t in sorted(tasks, key=lambda t: t not in finished)}
        ex = run_tasks(train_one, tasks, shared={"cfg": cfg, "root": str(run.root)}, on_result=done,
                       desc="headroom models", **par.kwargs()).execution
        run.record_execution(**ex)
        result = write_tables(run, jobs)  # also for a study with no model to train
        plot(result, run.figures / "headroom.png")
        run.log("headroom: wrote headroom.json, headroom.md, figures/headroom.png")
        return result
    finally:
        run.close()


# ---------------------------------------------------------------------------- analysis
def curve_difference(uniform: list[dict], energy: float, accs: list[float], key: str) -> dict:
    """Allocation minus the uniform curve at `energy` (linear in log-energy), with its 95 % t interval."""
    pts = sorted(uniform, key=lambda u: u["energy_uj"])
    e = [math.log(u["energy_uj"]) for u in pts]
    x = math.log(energy)
    if not e[0] <= x <= e[-1]:
        return {"inside_curve": False}
    i = max(0, min(len(pts) - 2, int(np.searchsorted(e, x, side="right")) - 1))
    t = (x - e[i]) / (e[i + 1] - e[i]) if e[i + 1] > e[i] else 0.0
    a, b = [r[key] for r in pts[i]["runs"]], [r[key] for r in pts[i + 1]["runs"]]
    est, lo, hi = combination_ci([accs, a, b], [1.0, -(1.0 - t), -t])
    return {"inside_curve": True, "between": [pts[i]["label"], pts[i + 1]["label"]], "t": t,
            "curve": float((1 - t) * np.mean(a) + t * np.mean(b)), "diff": est, "ci95": [lo, hi]}


def analyse(jobs: list[dict]) -> dict:
    rows = []
    for j in jobs:
        j["runs"] = sorted(j["runs"], key=lambda r: r["seed"])
        row = {k: j[k] for k in ("label", "kind", "widths", "energy_uj")}
        for key in ("test_acc", "val_acc"):
            vals = [r[key] for r in j["runs"] if r.get(key) is not None]
            if vals:
                row[key] = {**summarize(vals), "values": vals}
        row["runs"] = j["runs"]
        rows.append(row)
    uniform = [r for r in rows if r["kind"] == "uniform"]
    for r in rows:
        if r["kind"] != "allocation":
            continue
        for key in ("test_acc", "val_acc"):
            if key in r and all(key in u for u in uniform):
                uni = [{**u, "runs": [{key: v} for v in u[key]["values"]]} for u in uniform]
                r[f"{key}_vs_uniform"] = curve_difference(uni, r["energy_uj"], r[key]["values"], key)
    span = None
    if all("test_acc" in u for u in uniform):
        means = [u["test_acc"]["mean"] for u in uniform]
        stds = [u["test_acc"]["std"] for u in uniform]
        span = {"points": (means[-1] - means[0]) * 100, "max_seed_std_points": max(stds) * 100}
    return {"rows": rows, "uniform_span": span}


def width_summary(widths: list[int]) -> str:
    """"stem-stage 1 / stage 2 / stage 3" of a CIFAR ResNet's 1 + 6n conv widths ("8-8 / 16 / 32"); a stage whose
    convs differ lists them all. Other layouts: every width."""
    if len(widths) < 7 or (len(widths) - 1) % 6:
        return " ".join(map(str, widths))
    n2 = (len(widths) - 1) // 3
    stages = [widths[1 + i * n2:1 + (i + 1) * n2] for i in range(3)]
    parts = [str(s[0]) if len(set(s)) == 1 else ",".join(map(str, s)) for s in stages]
    return f"{widths[0]}-{parts[0]} / {parts[1]} / {parts[2]}"


def table(result: dict) -> str:
    def acc(s: dict | None) -> str:
        return f"{100 * s['mean']:.2f} +- {100 * s['std']:.2f} ({s['n']})" if s else "-"

    def diff(d: dict | None) -> str:
        if not d:
            return ""
        if not d.get("inside_curve"):
            return "outside the curve"
        return f"{100 * d['diff']:+.2f} [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]"

    lines = ["| model | widths (stem-stage 1 / stage 2 / stage 3) | energy µJ | test acc. % | val acc. % "
             "| test diff vs uniform, points [95 % CI] | val diff [95 % CI] |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {width_summary(r['widths'])} | {r['energy_uj']:.4g} | {acc(r.get('test_acc'))} "
                     f"| {acc(r.get('val_acc'))} | {diff(r.get('test_acc_vs_uniform'))} "
                     f"| {diff(r.get('val_acc_vs_uniform'))} |")
    s = result.get("uniform_span")
    if s:
        lines.append(f"\nUniform curve: {s['points']:+.2f} points from the first to the last U-kx; largest seed "
                     f"std {s['max_seed_std_points']:.2f} points.")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib  # lazy: matplotlib (+pyplot) costs 1.1-1.5 s to import, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    uni = [r for r in result["rows"] if r["kind"] == "uniform" and "test_acc" in r]
    e = [r["energy_uj"] for r in uni]
    m = np.array([100 * r["test_acc"]["mean"] for r in uni])
    s = np.array([100 * r["test_acc"]["std"] for r in uni])
    ax.plot(e, m, "o-", color="k", label="uniform U-kx (mean)")
    ax.fill_between(e, m - s, m + s, color="k", alpha=0.15, label="uniform +- 1 std")
    for r in result["rows"]:
        if r["kind"] == "allocation" and "test_acc" in r:
            ax.errorbar([r["energy_uj"]], [100 * r["test_acc"]["mean"]], yerr=[100 * r["test_acc"]["std"]],
                        fmt="s", capsize=4, label=r["label"])
    for r in uni:
        ax.annotate(r["label"], (r["energy_uj"], 100 * r["test_acc"]["mean"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    ax.set_xscale("log")
    finish(fig, ax, path, xlabel="crossbar energy per inference (µJ)", ylabel="test accuracy (%)",
           title="Width allocations vs uniform widening")


def main(argv: list[str] | None = None, prog: str = "python -m cimnas.pipelines.studies.headroom") -> int:
    p = OneLineParser(prog=prog, description=doc_summary(__doc__), formatter_class=HelpFormatter)
    p.add_argument("config", help="headroom study config (configs/studies/headroom_fashion.yaml)")
    p.add_argument("out", help="study folder (resumed when it exists)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set hardware.rows=128")
    add_parallel_args(p)
    args = p.parse_args(argv)

    def run() -> None:
        cfg = load_config(HeadroomConfig, args.config, args.set)
        print(table(run_study(cfg, args.out, par=parallelism_from_args(args))))

    # every finished model is in its run folder
    return guarded(run, error="error:", interrupted=STUDY_INTERRUPTED, exiting=argv is None)


__all__ = ["AllocationConfig", "HeadroomConfig", "Geometry", "analyse", "curve_difference", "plan", "run_study"]

if __name__ == "__main__":
    sys.exit(main())
