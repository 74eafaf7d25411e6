"""HAWIS small-scale study: the whole study as parallel runs, lambda calibration (Eq. 5), the U-kx seed spread,
and the DDPG vs random vs U-kx comparison (`hawis_compare`).

    python -m cimnas.pipelines.studies.hawis_study run CONFIG OUT [--set seed=S] [--uniform 0.5 1 2]
                                                   [--agents ddpg random] [--lam L] [--workers N | --ray-address A]
    python -m cimnas.pipelines.studies.hawis_study lambda CONFIG PRETRAIN_DIR SEED  # lambda from super-net U-kx
    python -m cimnas.pipelines.studies.hawis_study lambda-val STUDY_DIR             # lambda from stage-C U-kx
    python -m cimnas.pipelines.studies.hawis_study uniform-widths CONFIG K          # U-kx widths as a YAML list
    python -m cimnas.pipelines.studies.hawis_study compare OUT [--title TEXT]       # compare.md + compare_fig1.png
    python -m cimnas.pipelines.studies.hawis_study spread CONFIG K N OUT.json       # stage-C spread of U-kx

`run` (`run_study`) is the study of `scripts/hawis_study.sh` / `scripts/hawis_fashion_study.sh` as tasks of
`cimnas.parallel.run_tasks` (in this process, on N local Ray workers, or on a Ray cluster), each task one HAWIS
run folder of the study folder OUT, resumable on its own:

    pretrain/        stage A, the super-net both searches start from (pretrain.from_run)
    uniform/U-kx/    stage C of the U-kx widths (retrain.widths, with robustness), one per --uniform multiplier
    ddpg/, random/   stages A (copied) -> B -> C -> report at lambda (--lam, else calibrated: lambda.txt);
                     retrain.baselines=[] (the baselines are uniform/)

in two phases: the super-net and the U-kx baselines (independent), then the searches (they need the super-net
and lambda, calibrated in between from the super-net's U-kx sub-nets). Then `compare` when both agents ran.
OUT itself is a run folder (kind "hawis-study": the HAWIS config and the study's choices, run.log, and in
run.json how each phase ran). Every task is a function of (config, seed, its label) and writes only its own
folder, so the runs do not depend on the worker count; rerunning the command resumes (a finished folder is
reused by `run_pipeline(resume=True)`, a half-done one continues).

No choice made here sees the test split: both lambda calibrations use held-out accuracies of the training data
(`search_eval`: the super-net's sub-nets, or stage C's `val_accuracy`); test accuracies appear only as the final
numbers of `compare` and `spread`.
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cimnas.cli import STUDY_INTERRUPTED, HelpFormatter, OneLineParser, doc_summary, guarded
from cimnas.config import apply_overrides, from_dict, to_dict, validate
from cimnas.errors import CimnasError, check
from cimnas.parallel import Parallelism, add_parallel_args, parallelism_from_args, run_tasks
from cimnas.pipelines.hawis import ALL_STAGES, HawisConfig, load_hawis_config, make_context, run_pipeline, train_model
from cimnas.pipelines.hawis.stage_a import DONE, build_supernet, load_supernet
from cimnas.pipelines.studies.hawis_compare import AGENTS, compare, interp_uniform, stage_c_uniform
from cimnas.runs import RunFolder
from cimnas.stats import summarize
from cimnas.train import cycle_batches, evaluate
from cimnas.utils.io import check_output, read_json, write_json
from cimnas.utils.seed import derive_seed, make_generator, seed_everything
from cimnas.utils.units import pct, uj

KIND = "hawis-study"
#: which baselines and agents a study holds may change on resume (each is its own run folder)
RESUMABLE = ("uniform", "agents")
UNIFORM = (0.5, 0.75, 1.0, 1.5, 2.0)
AGENT_OVERRIDES = {"ddpg": [], "random": ["search.agent=random", "search.agent_options={}"]}


def _context_of(cfg: HawisConfig):
    """A stage context for `cfg` whose run folder is a throwaway temporary directory (nothing of the study is
    written there)."""
    return make_context(cfg, RunFolder.open(tempfile.mkdtemp(prefix="cimnas-study-"), "hawis-study", cfg))


def _context(config: str, overrides: list[str] | None = None):
    return _context_of(load_hawis_config(config, overrides or []))


# ============================================================================ the study as parallel runs
def derived_config(base: dict, overrides: Sequence[str]) -> HawisConfig:
    """The HAWIS config of one study run: the study's resolved config with `overrides` (checked)."""
    cfg = from_dict(HawisConfig, apply_overrides(copy.deepcopy(base), list(overrides)))
    validate(cfg)
    return cfg


def study_task(label: str, payload: dict, shared: dict) -> dict:
    """One run of the study (a `cimnas.parallel` task): `run_pipeline` of its stages into its own run folder
    (resumed when it exists); returns the plain summary (search best, final model)."""
    cfg = derived_config(shared["base"], payload["overrides"])
    summary = run_pipeline(cfg, Path(shared["root"]) / payload["out"], resume=True, stages=tuple(payload["stages"]))
    return {k: summary[k] for k in ("run_dir", "best", "final") if k in summary}


def _final_line(label: str, summary: dict) -> str:
    f = summary.get("final")
    if not f:
        return f"{label}: done ({summary['run_dir']})"
    return (f"{label}: widths {f['widths']}, test acc {pct(f['test_accuracy'])} (val {pct(f['val_accuracy'])}), "
            f"energy {uj(f['energy_uj'])}")


def study_lambda(cfg: HawisConfig, run: RunFolder, lam: float | None) -> float:
    """--lam, else lambda.txt of an earlier call, else calibrated on the super-net's U-kx sub-nets (written)."""
    if lam is not None:
        return float(lam)
    if run.has("lambda.txt"):
        return float(run.path("lambda.txt").read_text().split()[-1])
    lam, rows = lambda_from_supernet(_context_of(cfg), run.root / "pretrain")
    lam = float(f"{lam:.6g}")  # the value lambda.txt gives back on resume (the runs' configs must not change)
    run.path("lambda.txt").write_text(f"{lam:.6g}\n")
    run.log(f"lambda {lam:.4g} from the super-net's U-kx sub-nets " + ", ".join(
        f"U-{k:g}x {pct(a)}" for k, a, _ in rows), echo=False)
    return lam


def run_study(cfg: HawisConfig, out: str | Path, *, uniform: Sequence[float] = UNIFORM,
              agents: Sequence[str] = AGENTS, lam: float | None = None, par: Parallelism | None = None,
              title: str | None = None) -> dict:
    """The study of `cfg` (its seed) into study folder `out` (module doc); returns {run label: summary}."""
    par = par or Parallelism()
    uniform = [float(k) for k in uniform]
    check(all(k > 0 for k in uniform) and len(set(uniform)) == len(uniform),
          f"--uniform must list distinct multipliers > 0, got {uniform}")
    check(set(agents) <= set(AGENTS) and len(set(agents)) == len(agents),
          f"--agents must name distinct agents of {', '.join(AGENTS)}, got {list(agents)}")
    base = to_dict(cfg)
    study = {"hawis": base, "uniform": uniform, "agents": list(agents), "lam": lam}
    run = RunFolder.open(out, KIND, study, resume=True, resumable=RESUMABLE)
    try:
        ctx = _context_of(cfg)
        shared = {"base": base, "root": str(run.root)}
        summaries: dict = {}

        def done(label: str, summary: dict) -> None:
            summaries[label] = summary
            run.log(_final_line(label, summary))

        first = {"pretrain": {"out": "pretrain", "stages": ["pretrain"], "overrides": []}}
        for k in uniform:
            widths = "[" + ",".join(str(w) for w in ctx.uniform(k)) + "]"
            first[f"U-{k:g}x"] = {"out": f"uniform/U-{k:g}x", "stages": ["retrain"],
                                  "overrides": [f"retrain.widths={widths}", "retrain.pareto_models=0"]}
        ex = run_tasks(study_task, first, shared=shared, on_result=done, desc="super-net, U-kx", **par.kwargs())
        run.record_execution(phase="pretrain+uniform", **ex.execution)
        if agents:
            lam = study_lambda(cfg, run, lam)
            second = {a: {"out": a, "stages": list(ALL_STAGES), "overrides": [
                f"pretrain.from_run={run.root / 'pretrain'}", f"search.env.lam={lam}", "retrain.baselines=[]",
                *AGENT_OVERRIDES[a]]} for a in agents}
            ex = run_tasks(study_task, second, shared=shared, on_result=done, desc="searches", **par.kwargs())
            run.record_execution(phase="search", lam=lam, **ex.execution)
        if set(agents) == set(AGENTS) and len(uniform) >= 2:
            compare(run.root, title)
            run.log("wrote compare.md and compare_fig1.png", echo=False)
        return summaries
    finally:
        run.close()


# ============================================================================ lambda calibration
def equal_reward_lambda(rows: list[tuple[float, float, float]]) -> tuple[float, bool]:
    """Lambda at which rewards `R_k = -err_k * log(q_k / lam)` have zero least-squares slope against
    `x_k = log q_k`, for rows `(k, accuracy, q = Q/Q(A_b))`; returns (lambda, found).

    Searched in `(1e-4, min q)` so that every reward stays negative (`lam < Q_min/Q(A_b)`). When the slope does
    not change sign there (the accuracies barely rise with energy), returns `(min q / 2, False)`.
    """
    if len(rows) < 2:
        raise CimnasError("lambda calibration needs at least two U-kx points")
    x = np.log([r[2] for r in rows])
    err = 1.0 - np.array([r[1] for r in rows])

    def slope(loglam: float) -> float:
        return float(np.polyfit(x, -err * (x - loglam), 1)[0])

    lo, hi = math.log(1e-4), math.log(min(r[2] for r in rows))
    if slope(lo) * slope(hi) > 0:
        return math.exp(hi) / 2, False
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) * slope(lo) > 0 else (lo, mid)
    return math.exp((lo + hi) / 2), True


LAMBDA_MULTIPLIERS = (0.5, 0.75, 1, 1.25, 1.5, 2)


def calibrate_lambda(config: str, pretrain_dir: str, seed: int,
                     multipliers: tuple[float, ...] = LAMBDA_MULTIPLIERS) -> tuple[float, list]:
    """Evaluate the U-kx sub-nets of a pretrained super-net (BN recalibrated, held-out accuracy) and return
    the equal-reward lambda and the rows `(k, accuracy, Q/Q(A_b))`; progress goes to stderr."""
    return lambda_from_supernet(_context(config, [f"seed={seed}"]), pretrain_dir, multipliers)


def lambda_from_supernet(ctx, pretrain_dir: str | Path,
                         multipliers: tuple[float, ...] = LAMBDA_MULTIPLIERS) -> tuple[float, list]:
    """`calibrate_lambda` on a built context."""
    cfg = ctx.cfg
    net = build_supernet(ctx)
    path = Path(pretrain_dir) / "checkpoints" / DONE
    if not path.is_file():
        raise CimnasError(f"{path} not found: run `cimnas hawis pretrain --out {pretrain_dir}` first")
    load_supernet(ctx, net, path)
    qb = ctx.energy(ctx.build(ctx.base_widths, meta=True))["energy_uj"]
    nb, bs = cfg.search.env.bn_recal_batches, cfg.search.env.batch_size
    rows = []
    for k in multipliers:
        w = list(ctx.space.uniform_widths(k).widths)
        net.recalibrate_bn(w, cycle_batches(ctx.splits.search_train, bs, nb, make_generator(0)), nb, ctx.device)
        acc = evaluate(net, ctx.splits.search_eval, device=ctx.device)
        with net.subnet(w):
            q = ctx.energy(net.model)["energy_uj"]
        rows.append((k, acc, q / qb))
        print(f"U-{k:g}x: held-out acc {pct(acc)}  Q/Q(A_b) {q / qb:.3f}", file=sys.stderr)
    return _report_lambda(rows)


def _report_lambda(rows: list[tuple[float, float, float]]) -> tuple[float, list]:
    lam, found = equal_reward_lambda(rows)
    if not found:
        print(f"no sign change; using lam = {lam:.4f}", file=sys.stderr)
    else:
        for k, a, r in rows:
            print(f"  U-{k:g}x reward at lam {lam:.4f}: {-(1 - a) * math.log(r / lam):+.4f}", file=sys.stderr)
    return lam, rows


def calibrate_lambda_val(out: str | Path) -> tuple[float, list]:
    """Equal-reward lambda from the stage-C U-kx models of a study folder, on their **validation** accuracies
    (held-out training data; never the test split). Needs U-1x (it defines Q(A_b)) and one more U-kx."""
    uni = stage_c_uniform(Path(out))
    if "U-1x" not in uni:
        raise CimnasError(f"{out}: no stage-C U-1x result (it gives Q(A_b)); train U-1x first")
    missing = sorted(k for k, v in uni.items() if "val_accuracy" not in v)
    if missing:
        raise CimnasError(f"{out}: {missing[0]} has no val_accuracy (trained by an older cimnas); retrain it")
    qb = uni["U-1x"]["energy_uj"]
    rows = sorted((float(k[2:-1]), v["val_accuracy"], v["energy_uj"] / qb) for k, v in uni.items())
    for k, a, r in rows:
        print(f"U-{k:g}x: stage-C val acc {pct(a)}  Q/Q(A_b) {r:.3f}", file=sys.stderr)
    return _report_lambda(rows)


def uniform_widths(config: str, k: float) -> list[int]:
    """Per-layer widths of U-kx for a HAWIS config (the same rounding as stage C's baselines)."""
    if not k > 0:
        raise CimnasError(f"width multiplier k must be > 0, got {k}")
    return _context(config).uniform(float(k))


def seed_spread(config: str, k: float, n: int, out_json: str | Path, seed: int = 0) -> dict:
    """Train U-kx `n` times with stage C's schedule on the same data, each with its own init and batch-order
    seed (labels `U-kx-rep<i>`), to measure how much stage-C test accuracy moves with the training seed
    alone. `accuracies` holds test accuracies (the spread of the final number), `val_accuracies` the held-out
    ones. Results go to `out_json` after each model (atomic; a rerun skips finished ones)."""
    if n < 2:
        raise CimnasError(f"spread needs n >= 2 trainings, got {n}")
    if not k > 0:
        raise CimnasError(f"width multiplier k must be > 0, got {k}")
    ctx = _context(config, [f"seed={seed}"])
    cfg = ctx.cfg
    widths = ctx.uniform(float(k))
    out_json = check_output(out_json, flag="OUT_JSON")  # a regular file (read back and extended on a rerun)
    res = read_json(out_json) if out_json.is_file() else {"widths": widths, "accuracies": {}}
    check(isinstance(res, dict) and isinstance(res.get("accuracies"), dict)
          and isinstance(res.setdefault("val_accuracies", {}), dict),
          f"{out_json} is not a spread result (no accuracies mapping); give a new OUT_JSON or delete it")
    # a rerun adds to the file: only the same U-kx widths, or the mean / std would mix two networks
    check(res.get("widths") == widths, f"{out_json} holds the spread of widths {res.get('widths')}, not U-{k:g}x "
          f"{widths}; give a new OUT_JSON for this k (or this config)")
    for i in range(n):
        label = f"U-{float(k):g}x-rep{i}"
        if label in res["accuracies"]:
            continue
        seed_everything(derive_seed(cfg.seed, "retrain-init", label))
        trained = train_model(ctx, ctx.build(widths), cfg.retrain, label)
        res["accuracies"][label] = trained["test_accuracy"]
        res["val_accuracies"][label] = trained["val_accuracy"]
        s = summarize(list(res["accuracies"].values()))
        res.update({k: s[k] for k in ("mean", "std", "min", "max")})
        write_json(out_json, res)
        print(f"{label}: test acc {pct(res['accuracies'][label])}", file=sys.stderr)
    return res


# ============================================================================ CLI
def main(argv: list[str] | None = None, prog: str = "python -m cimnas.pipelines.studies.hawis_study") -> int:
    p = OneLineParser(prog=prog, description=doc_summary(__doc__), formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("run", help="the whole study (super-net, U-kx, DDPG and random searches) as parallel runs")
    q.add_argument("config", help="HAWIS config")
    q.add_argument("out", help="study folder (resumed when it exists)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one HAWIS config value (repeatable), e.g. --set seed=1")
    q.add_argument("--uniform", type=float, nargs="*", default=list(UNIFORM), metavar="K",
                   help="U-kx baselines, each its own run folder uniform/U-kx")
    q.add_argument("--agents", nargs="*", default=list(AGENTS), choices=AGENTS, help="searches to run")
    q.add_argument("--lam", type=float, help="Eq. 5 lambda (default: calibrated on the super-net, lambda.txt)")
    q.add_argument("--title", help="title of compare_fig1.png")
    add_parallel_args(q)
    q = sub.add_parser("lambda", help="equal-reward lambda from the U-kx sub-nets of a pretrained super-net")
    q.add_argument("config", help="HAWIS config")
    q.add_argument("pretrain_dir", help="run folder with a finished stage A (checkpoints/supernet.pt)")
    q.add_argument("seed", type=int, help="seed of the sub-net evaluation")
    q = sub.add_parser("lambda-val", help="equal-reward lambda from the stage-C U-kx validation accuracies")
    q.add_argument("out", help="study folder (reads uniform/U-kx/stage_c.json)")
    q = sub.add_parser("uniform-widths", help="U-kx widths of a config as a YAML list")
    q.add_argument("config", help="HAWIS config")
    q.add_argument("k", type=float, help="width multiplier")
    q = sub.add_parser("spread", help="stage-C test accuracy of U-kx over N training seeds (same data)")
    q.add_argument("config", help="HAWIS config")
    q.add_argument("k", type=float, help="width multiplier")
    q.add_argument("n", type=int, help="training seeds")
    q.add_argument("out_json", help="JSON file for the accuracies")
    q.add_argument("--seed", type=int, default=0, help="first training seed")
    q = sub.add_parser("compare", help="DDPG vs random vs U-kx: OUT/compare.md and OUT/compare_fig1.png")
    q.add_argument("out", help="study folder")
    q.add_argument("--title", help="title of compare_fig1.png")
    args = p.parse_args(argv)

    def run() -> None:
        if args.cmd == "run":
            cfg = load_hawis_config(args.config, args.overrides)
            runs = run_study(cfg, args.out, uniform=args.uniform, agents=args.agents, lam=args.lam,
                             par=parallelism_from_args(args), title=args.title)
            print("\n".join(_final_line(label, summary) for label, summary in runs.items()))
        elif args.cmd == "lambda":
            print(f"{calibrate_lambda(args.config, args.pretrain_dir, args.seed)[0]:.4f}")
        elif args.cmd == "lambda-val":
            print(f"{calibrate_lambda_val(args.out)[0]:.4f}")
        elif args.cmd == "spread":
            r = seed_spread(args.config, args.k, args.n, args.out_json, args.seed)
            print(f"mean {pct(r['mean'])}, std {100 * r['std']:.2f} points, range {100 * r['min']:.2f}"
                  f" - {pct(r['max'])} over {len(r['accuracies'])} seeds")
        elif args.cmd == "uniform-widths":
            print("[" + ",".join(map(str, uniform_widths(args.config, args.k))) + "]")
        else:
            print(compare(args.out, args.title), end="")

    # finished models stay in their run folders
    return guarded(run, error="error:", interrupted=STUDY_INTERRUPTED, exiting=argv is None)


__all__ = ["AGENTS", "calibrate_lambda", "calibrate_lambda_val", "compare", "derived_config", "equal_reward_lambda",
           "interp_uniform", "lambda_from_supernet", "run_study", "seed_spread", "stage_c_uniform", "study_task",
           "uniform_widths"]

if __name__ == "__main__":
    sys.exit(main())
