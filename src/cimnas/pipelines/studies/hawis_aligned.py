"""HAWIS against the aligned-uniform baseline (issue 20): searched widths vs uniform nets snapped to crossbar fills.

Arms: HAWIS searches (`arms`: DDPG, random search, DDPG with the robustness-aware `mc_mean` reward under the
config's defects), each with every seed of `search_seeds` and one episode budget, stage A shared per seed; the
aligned-uniform net (`cimnas.hardware.align.aligned_uniform`) of largest energy at or below each searched net's and
at or below U-1x's; the U-kx curve (a headroom sub-study). Every chosen net (the best-reward episode of each search)
and every aligned-uniform net is trained from scratch with `retrain_seeds` seeds and the headroom recipe (`base`).
Lambda (Eq. 5): the `lam` given, else the value at which U-1x is the reward's optimum along the stage-C uniform
curve (validation accuracies of the first `lambda_seeds` seeds: fitted slope s of accuracy against log energy,
error e of U-1x, lambda = exp(-e / s), the tangent of R = -Error (log(Q / Q_1x) - log lambda) at U-1x). Nothing
here reads a test accuracy before the report; the verdict per arm is taken on validation accuracy.

    python -m cimnas.pipelines.studies.hawis_aligned CONFIG OUT [--set KEY=VALUE ...] [--workers N] [--publish DIR]
        [--report-only]

Study folder OUT: config.yaml, run.log, lambda.txt, `uniform_dir` (default uniform/: the headroom sub-study of the
U-kx curve; when another process holds it, its finished models are read and the study waits for the lambda seeds),
search/pretrain/seed<s>/ and search/<arm>/seed<s>/ (HAWIS run folders, stages A and B), runs/<label>/seed<k>/
(`cimnas train` run folders), hawis_aligned.json and figures/hawis_aligned.png after every finished model.
Rerun the same command to resume. `--publish DIR` also writes DIR/hawis_aligned_study.{json,png}; `--report-only`
rewrites the JSON and the figure from the finished models (the study must not be running).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cimnas.cli import STUDY_INTERRUPTED, OneLineParser, doc_summary, guarded
from cimnas.config import diff_configs, load_config, to_dict
from cimnas.errors import check
from cimnas.hardware.align import ArchProbe, aligned_uniform
from cimnas.hardware.crossbar import HardwareConfig
from cimnas.nn.widths import width_groups
from cimnas.parallel import Parallelism, add_parallel_args, parallelism_from_args, run_tasks
from cimnas.pipelines.hawis import HawisConfig
from cimnas.pipelines.studies import headroom
from cimnas.pipelines.studies.hawis_study import study_task as hawis_task
from cimnas.pipelines.train import TrainRunConfig, load_splits
from cimnas.reports.folder import lock_held
from cimnas.runs import RunFolder
from cimnas.utils.io import read_json, read_jsonl

KIND = "study-hawis-aligned"
RESUMABLE = ("retrain_seeds", "base.train.progress", "publish")


@dataclass
class ArmConfig:
    """One search arm: HAWIS config overrides (e.g. search.agent=random)."""

    name: str = "ddpg"
    overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        headroom.check_label(self.name, "arm name")


def _default_arms() -> list[ArmConfig]:
    return [ArmConfig("ddpg"), ArmConfig("random", ["search.agent=random", "search.agent_options={}"]),
            ArmConfig("ddpg-mc", ["search.env.reward_accuracy=mc_mean"])]


@dataclass
class AlignedStudyConfig:
    """Root config (configs/studies/hawis_aligned_*.yaml)."""

    base: TrainRunConfig = field(default_factory=TrainRunConfig)  # training of every compared net (headroom's)
    hawis: HawisConfig = field(default_factory=HawisConfig)  # the searches (stages A and B)
    arms: list[ArmConfig] = field(default_factory=_default_arms)
    search_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    uniform: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.5])  # the U-kx curve (must hold 1.0)
    uniform_dir: str = "uniform"  # its headroom sub-study, relative to the study folder (or absolute)
    retrain_seeds: int = 20
    lam: float | None = None  # Eq. 5 lambda; None: the U-1x tangent of the uniform curve (module doc)
    lambda_seeds: int = 5
    poll_s: float = 120.0  # wait between looks at a uniform sub-study another process is training
    d: int = 4
    hardware: HardwareConfig = field(default_factory=HardwareConfig)  # the shared section (stored before the
    # one-vocabulary change as `hardware_preset`, which config.RENAMED moves here on resume)

    def validate(self) -> None:
        check(1.0 in self.uniform and len(self.uniform) >= 2, "uniform must hold 1.0 (U-1x) and one more k")
        check(2 <= self.retrain_seeds <= 100, "retrain_seeds must be in 2..100")
        check(1 <= self.lambda_seeds <= self.retrain_seeds, "lambda_seeds must be in 1..retrain_seeds")
        check(len(self.search_seeds) >= 1 and len(set(self.search_seeds)) == len(self.search_seeds),
              "search_seeds: give distinct seeds")
        names = [a.name for a in self.arms]
        check(len(names) == len(set(names)) and "pretrain" not in names, "arm names must be unique, not 'pretrain'")
        check(self.lam is None or 0 < self.lam < 1, f"lam must be in (0, 1), got {self.lam}")

    def headroom(self) -> headroom.HeadroomConfig:
        return headroom.HeadroomConfig(base=self.base, uniform=list(self.uniform), uniform_seeds=self.retrain_seeds,
                                       allocations=[], d=self.d, hardware=self.hardware)


# ---------------------------------------------------------------------------- sizing
class Sizing:
    """The study's geometry (`headroom.Geometry`: widths, groups, energy) and its `ArchProbe`, built once per
    process; `baseline(energy)` is the aligned-uniform net of largest energy at or below `energy`."""

    _cache: dict[str, Sizing] = {}

    def __init__(self, cfg: AlignedStudyConfig):
        self.cfg = cfg
        splits = load_splits(cfg.base.data, cfg.base.seed, torch.device("cpu"))
        self.geo = g = headroom.Geometry(cfg, splits)
        self.probe = ArchProbe(g.model_name, g.spec, in_channels=g.input_shape[0], num_classes=g.num_classes,
                               image_size=g.input_shape[1], precision="binary", refactor=g.refactor,
                               **cfg.base.model.options)
        self._baselines: dict[float, dict] = {}

    @classmethod
    def of(cls, cfg: AlignedStudyConfig, root: str) -> Sizing:
        if root not in cls._cache:
            cls._cache[root] = cls(cfg)
        return cls._cache[root]

    def baseline(self, energy: float) -> dict:
        if energy not in self._baselines:
            au = aligned_uniform(self.geo.model_name, self.geo.spec, energy_budget=energy, d=self.cfg.d,
                                 probe=self.probe)
            groups = width_groups(self.probe.base)
            self._baselines[energy] = {"label": "AU-" + "-".join(str(au["widths"][g[0]]) for g in groups),
                                       "kind": "aligned-uniform", "widths": au["widths"],
                                       "from_width_mult": au["width_mult"]}
        return self._baselines[energy]

    def baseline_of(self, widths: list[int], energy: float | None = None) -> dict | None:
        """The baseline a net is compared with: None when the net fills its crossbars already (it is its own
        baseline); a U-kx of the curve when the aligned-uniform net is one (label U-kx, kind uniform: no second
        copy is trained); else the aligned-uniform net (`baseline`)."""
        b = self.baseline(self.geo.energy(widths) if energy is None else energy)
        if b["widths"] == list(widths):
            return None
        k = next((k for k in self.cfg.uniform if self.geo.uniform(k) == b["widths"]), None)
        return b if k is None else {**b, "label": f"U-{k:g}x", "kind": "uniform"}


# ---------------------------------------------------------------------------- tasks
def task(task_id: tuple, payload: dict, shared: dict) -> dict:
    """One task of the study: a HAWIS run (`hawis_study.study_task`) or one training (`headroom.train_one`).

    A search with `then_train` {label, seeds} goes on, in the same worker, to train its chosen net (the best-reward
    episode, `best_arch.json`) with every seed, then the seeds of that net's aligned-uniform baseline that no other
    worker is training: a study stopped part-way holds whole comparisons, not nine half-finished searches (the
    retrain phase trains whatever is left)."""
    train_shared = {"cfg": shared["cfg"], "root": shared["root"]}
    if payload["kind"] != "hawis":
        return headroom.train_one(task_id[1:], payload, train_shared)
    out = hawis_task(task_id[1], payload, {"base": shared["hawis"], "root": shared["root"]})
    then = payload.get("then_train")
    if then:
        widths = list(read_json(Path(shared["root"]) / payload["out"] / "best_arch.json")["widths"])
        out["trained"] = [headroom.train_one((then["label"], s), {"kind": "train", "widths": widths}, train_shared)
                          for s in then["seeds"]]
        b = Sizing.of(shared["cfg"], shared["root"]).baseline_of(widths)
        if b is not None and b["kind"] == "aligned-uniform":  # a U-kx baseline trains in uniform/
            for s in then["seeds"]:
                if not lock_held(headroom.model_dir(Path(shared["root"]), b["label"], s)):
                    headroom.train_one((b["label"], s), {"kind": "train", "widths": b["widths"]}, train_shared)
    return out


def finished(root: Path, label: str, seeds: range) -> list[dict]:
    """final.json of every finished seed of one net (`headroom.model_dir` layout), with its seed."""
    out = []
    for s in seeds:
        p = headroom.model_dir(root, label, s) / "final.json"
        if p.is_file():
            f = read_json(p)
            out.append({"seed": s, "test_acc": f["test_acc"], "val_acc": f.get("val_acc")})
    return out


def tangent_lambda(points: list[tuple[float, float]]) -> float:
    """Lambda whose reward is stationary at U-1x along the uniform curve: points (Q / Q_1x, val accuracy)."""
    x = np.log([q for q, _ in points])
    s = float(np.polyfit(x, [a for _, a in points], 1)[0])
    err = 1.0 - next(a for q, a in points if abs(q - 1.0) < 1e-9)
    check(s > 1e-6, f"the uniform curve does not rise (slope {s:.4f} per e-fold of energy): no lambda puts the "
          "optimum at U-1x; set lam")
    return math.exp(-err / s)


# ---------------------------------------------------------------------------- the study
class Study:
    def __init__(self, cfg: AlignedStudyConfig, out: str | Path, par: Parallelism | None = None):
        self.cfg, self.par = cfg, par or Parallelism()
        self.run = RunFolder.open(out, KIND, cfg, resume=True, config_cls=AlignedStudyConfig,
                                           resumable=RESUMABLE)
        self.root = self.run.root
        self.udir = self.root / cfg.uniform_dir
        self.size = Sizing(cfg)
        self.geo, self.probe = self.size.geo, self.size.probe
        self.seeds = range(cfg.retrain_seeds)
        self.shared = {"cfg": cfg, "root": str(self.root), "hawis": to_dict(cfg.hawis)}

    def tasks(self, todo: dict, desc: str, publish: str | None) -> None:
        """Run one phase's tasks; the JSON after every finished task, the figure after the phase."""
        def done(task_id: tuple, result: dict) -> None:
            if task_id[0] == "train":
                self.run.log(f"{task_id[1]} seed {task_id[2]}: val {result.get('val_acc', float('nan')):.4f}",
                             echo=False)
            self.report(publish, figure=False)

        ex = run_tasks(task, todo, shared=self.shared, on_result=done, desc=desc, **self.par.kwargs())
        self.run.record_execution(phase=desc, **ex.execution)
        self.report(publish)

    def uniform_curve(self) -> None:
        """Train the U-kx sub-study, unless another process is training it (its models are read as they finish)."""
        if lock_held(self.udir):
            self.run.log(f"uniform: {self.udir} is being trained by another process; reading its finished models")
            stored = read_json(self.udir / "run.json") if (self.udir / "run.json").is_file() else {}
            check(stored.get("kind") in (None, headroom.KIND), f"{self.udir} is not a headroom study")
            return
        headroom.run_study(self.cfg.headroom(), self.udir, par=self.par)

    def lam(self) -> float:
        if self.cfg.lam is not None:
            return float(self.cfg.lam)
        if self.run.has("lambda.txt"):
            return float(self.run.path("lambda.txt").read_text().split()[0])
        need = range(self.cfg.lambda_seeds)
        while True:
            runs = {k: finished(self.udir, f"U-{k:g}x", need) for k in self.cfg.uniform}
            if all(len(r) == len(need) for r in runs.values()) or not lock_held(self.udir):
                break
            time.sleep(self.cfg.poll_s)
        missing = [f"U-{k:g}x" for k, r in runs.items() if len(r) < len(need)]
        check(not missing, f"{self.udir}: {', '.join(missing)} lack validation accuracies of seeds 0.."
              f"{len(need) - 1}; train the uniform curve first (or set lam)")
        e1 = self.geo.energy(self.geo.uniform(1.0))
        pts = [(self.geo.energy(self.geo.uniform(k)) / e1, float(np.mean([r["val_acc"] for r in runs[k]])))
               for k in self.cfg.uniform]
        lam = float(f"{tangent_lambda(pts):.6g}")
        self.run.path("lambda.txt").write_text(f"{lam:.6g}\n")
        self.run.log(f"lambda {lam:.6g}: U-1x tangent of the uniform curve (val, seeds 0..{len(need) - 1}): "
                     + ", ".join(f"Q/Q1x {q:.3f} acc {a:.4f}" for q, a in pts))
        return lam

    def search_dir(self, arm: str, seed: int) -> Path:
        return self.root / "search" / arm / f"seed{seed}"

    def searched(self) -> list[dict]:
        """The chosen net of every finished search (best-reward episode)."""
        rows = []
        for a in self.cfg.arms:
            for s in self.cfg.search_seeds:
                best = self.search_dir(a.name, s) / "best_arch.json"
                if best.is_file():
                    b = read_json(best)
                    rows.append({"label": f"{a.name}-s{s}", "kind": "search", "arm": a.name, "search_seed": s,
                                 "widths": list(b["widths"]),
                                 "proxy": {k: b[k] for k in ("episode", "reward", "accuracy", "energy_uj")}})
        return rows

    def episodes(self) -> dict[tuple[str, int], list[dict]]:
        """Every finished episode of every search so far (the proxy accuracies), by (arm, search seed)."""
        paths = {(a.name, s): self.search_dir(a.name, s) / "episodes.jsonl" for a in self.cfg.arms
                 for s in self.cfg.search_seeds}
        return {key: read_jsonl(p) for key, p in paths.items() if p.is_file()}

    def plan(self) -> list[dict]:
        """Every net to compare: U-kx, the searched nets, and the aligned-uniform baseline of each."""
        rows = [{"label": f"U-{k:g}x", "kind": "uniform", "widths": self.geo.uniform(k), "root": self.udir}
                for k in self.cfg.uniform]
        rows += self.searched()
        for r in rows:
            r["energy_uj"] = self.geo.energy(r["widths"])
        base: dict[str, dict] = {}
        for r in rows:
            if r["kind"] == "search" or r["label"] == "U-1x":
                b = self.size.baseline_of(r["widths"], r["energy_uj"])
                if b is None:
                    continue  # the net fills its crossbars already: it is its own baseline
                r["baseline"] = b["label"]
                if b["kind"] == "aligned-uniform":
                    base.setdefault(b["label"], {**b, "energy_uj": self.geo.energy(b["widths"])})
        for r in rows + list(base.values()):
            r.setdefault("root", self.root)
        return rows + list(base.values())

    def report(self, publish: str | None = None, figure: bool = True) -> dict:
        """hawis_aligned.json (and, with `figure`, the figure) of every finished model; a copy in `publish`."""
        from cimnas.pipelines.studies.hawis_aligned_report import analyse, plot

        rows = self.plan()
        for r in rows:
            r["runs"] = finished(Path(r.pop("root")), r["label"], self.seeds)
        eps = self.episodes()
        finished_searches = {f"{a}-s{s}": e for (a, s), e in eps.items()
                             if (self.search_dir(a, s) / "best_arch.json").is_file()}
        result = analyse(rows, self.cfg.retrain_seeds, searches=finished_searches,
                         q_ref=self.geo.energy(self.geo.uniform(1.0)))
        lam = self.run.path("lambda.txt")
        result["lambda"] = float(lam.read_text()) if lam.is_file() else self.cfg.lam
        proxy = {a.name: [e for (arm, _), es in eps.items() if arm == a.name for e in es] for a in self.cfg.arms}
        self.run.write_result("hawis_aligned.json", result)
        if figure:
            plot(result, proxy, self.run.figures / "hawis_aligned.png")
        if publish:
            Path(publish).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / "hawis_aligned.json", Path(publish) / "hawis_aligned_study.json")
            if figure:
                shutil.copyfile(self.run.figures / "hawis_aligned.png", Path(publish) / "hawis_aligned_study.png")
        return result


    def go(self, publish: str | None = None) -> dict:
        c = self.cfg
        check_uniform_config(c, self.udir)
        self.uniform_curve()
        pre = {("hawis", f"pretrain-s{s}"): {"kind": "hawis", "out": f"search/pretrain/seed{s}", "stages": ["pretrain"],
                                             "overrides": [f"seed={s}"]} for s in c.search_seeds}
        u1 = [r for r in self.plan() if r["kind"] == "aligned-uniform"]  # the baseline at U-1x: no search needed
        pre.update({("train", r["label"], s): {"kind": "train", "widths": r["widths"]} for r in u1 for s in self.seeds})
        self.tasks(pre, "pretrain + aligned-uniform at U-1x", publish)
        lam = self.lam()
        search = {("hawis", f"{a.name}-s{s}"): {
            "kind": "hawis", "out": f"search/{a.name}/seed{s}", "stages": ["pretrain", "search"],
            "overrides": [f"seed={s}", f"pretrain.from_run={self.root / 'search' / 'pretrain' / f'seed{s}'}",
                          f"search.env.lam={lam}", "retrain.baselines=[]", *a.overrides],
            "then_train": {"label": f"{a.name}-s{s}", "seeds": list(self.seeds)}}
            for s in c.search_seeds for a in c.arms}  # seed-major: every arm's first search comes first
        self.tasks(search, "searches (each followed by its chosen net's trainings)", publish)
        todo = {("train", r["label"], s): {"kind": "train", "widths": r["widths"]} for r in self.plan()
                if r["kind"] != "uniform" for s in self.seeds}
        self.tasks(todo, "retrain", publish)
        return self.report(publish)


def check_uniform_config(cfg: AlignedStudyConfig, udir: Path) -> None:
    """The uniform sub-study must train the same nets with the same recipe as this study's."""
    if (udir / "config.yaml").is_file():
        stored = RunFolder(udir, headroom.KIND).stored_config(headroom.HeadroomConfig)
        diff = [k for k in diff_configs(stored, to_dict(cfg.headroom())) if not k.startswith("base.train.progress")]
        check(not diff, f"{udir} holds a uniform study with other settings ({', '.join(diff[:3])}); point "
              "uniform_dir at a matching one")


def main(argv: list[str] | None = None, prog: str = "python -m cimnas.pipelines.studies.hawis_aligned") -> int:
    p = OneLineParser(prog=prog, description=doc_summary(__doc__))
    p.add_argument("config", help="aligned study config (configs/studies/hawis_aligned_fashion.yaml)")
    p.add_argument("out", help="study folder (resumed when it exists)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (repeatable)")
    p.add_argument("--publish", default=None, metavar="DIR", help="also write DIR/hawis_aligned_study.{json,png}")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the JSON and the figure from the finished models and train nothing")
    add_parallel_args(p)
    args = p.parse_args(argv)

    def run() -> None:
        cfg = load_config(AlignedStudyConfig, args.config, args.set)
        study = Study(cfg, args.out, parallelism_from_args(args))
        try:
            res = study.report(args.publish) if args.report_only else study.go(args.publish)
        finally:
            study.run.close()
        print(res["summary"])

    return guarded(run, error="error:", interrupted=STUDY_INTERRUPTED)


__all__ = ["AlignedStudyConfig", "ArmConfig", "Study", "tangent_lambda", "task"]
if __name__ == "__main__":
    sys.exit(main())
