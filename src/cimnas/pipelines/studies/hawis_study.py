"""HAWIS small-scale study helpers: lambda calibration (Eq. 5) and the DDPG vs random vs U-kx comparison.

Used by `scripts/hawis_study.sh` (digits) and `scripts/hawis_fashion_study.sh` (Fashion-MNIST):

    python -m cimnas.pipelines.studies.hawis_study lambda CONFIG PRETRAIN_DIR SEED  # lambda from super-net U-kx
    python -m cimnas.pipelines.studies.hawis_study lambda-val STUDY_DIR             # lambda from stage-C U-kx
    python -m cimnas.pipelines.studies.hawis_study uniform-widths CONFIG K          # U-kx widths as a YAML list
    python -m cimnas.pipelines.studies.hawis_study compare OUT [--title TEXT]       # compare.md + compare_fig1.png
    python -m cimnas.pipelines.studies.hawis_study spread CONFIG K N OUT.json       # stage-C spread of U-kx

No choice made here sees the test split: both lambda calibrations use held-out accuracies of the training data
(`search_eval`: the super-net's sub-nets, or stage C's `val_accuracy`); test accuracies appear only as the final
numbers of `compare` and `spread`.

A study folder OUT holds `ddpg/` and `random/` HAWIS run folders (same super-net, seed and episode count)
and the U-kx baselines either as `U-kx` entries of `ddpg/stage_c.json` or as their own run folders
`uniform/U-kx/` (stage C of `retrain.widths`, with robustness). `compare` puts every model on one
Fig. 1-style plot and tabulates, for each retrained searched model, the U-kx accuracy interpolated at its
energy (linear in log-energy between the two neighbouring baselines): the paper's claim (Fig. 1) is that
searched widths lie above the uniform curve.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from cimnas.errors import CimnasError
from cimnas.pipelines.hawis import load_hawis_config, make_context, train_model
from cimnas.pipelines.hawis.stage_a import DONE, build_supernet, load_supernet
from cimnas.runs import RunFolder
from cimnas.stats import summarize
from cimnas.train import cycle_batches, evaluate
from cimnas.utils.io import atomic_write_bytes, read_json, read_jsonl, write_json
from cimnas.utils.seed import derive_seed, make_generator, seed_everything

AGENTS = ("ddpg", "random")


def _context(config: str, overrides: list[str] | None = None):
    """A stage context for `config` whose run folder is a throwaway temporary directory (nothing of the
    study is written there)."""
    cfg = load_hawis_config(config, overrides or [])
    return make_context(cfg, RunFolder.open(tempfile.mkdtemp(prefix="cimnas-study-"), "hawis-study", cfg))


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


def calibrate_lambda(config: str, pretrain_dir: str, seed: int,
                     multipliers: tuple[float, ...] = (0.5, 0.75, 1, 1.25, 1.5, 2)) -> tuple[float, list]:
    """Evaluate the U-kx sub-nets of a pretrained super-net (BN recalibrated, held-out accuracy) and return
    the equal-reward lambda and the rows `(k, accuracy, Q/Q(A_b))`; progress goes to stderr."""
    ctx = _context(config, [f"seed={seed}"])
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
        print(f"U-{k:g}x: held-out acc {acc:.4f}  Q/Q(A_b) {q / qb:.3f}", file=sys.stderr)
    return _report_lambda(rows)


def _report_lambda(rows: list[tuple[float, float, float]]) -> tuple[float, list]:
    lam, found = equal_reward_lambda(rows)
    if not found:
        print(f"no sign change; using lam = {lam:.4f}", file=sys.stderr)
    else:
        for k, a, r in rows:
            print(f"  U-{k:g}x reward at lam {lam:.4f}: {-(1 - a) * math.log(r / lam):+.4f}", file=sys.stderr)
    return lam, rows


def stage_c_uniform(out: Path) -> dict[str, dict]:
    """The study's stage-C U-kx results: `U-kx` entries of `ddpg/stage_c.json` and `uniform/U-kx/` run folders."""
    uni: dict[str, dict] = {}
    for sc in [out / a / "stage_c.json" for a in AGENTS]:
        if sc.is_file():
            uni.update({k: v for k, v in read_json(sc).items() if k.startswith("U-")})
    for sc in sorted((out / "uniform").glob("U-*/stage_c.json")):
        uni[sc.parent.name] = read_json(sc)["searched"]
    return uni


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
        print(f"U-{k:g}x: stage-C val acc {a:.4f}  Q/Q(A_b) {r:.3f}", file=sys.stderr)
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
    out_json = Path(out_json)
    res = read_json(out_json) if out_json.is_file() else {"widths": widths, "accuracies": {}}
    res.setdefault("val_accuracies", {})
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
        print(f"{label}: test acc {res['accuracies'][label]:.4f}", file=sys.stderr)
    return res


# ============================================================================ comparison
def interp_uniform(uniform: list[tuple[float, float]], energy: float) -> float | None:
    """Accuracy of the uniform curve at `energy`: linear in log-energy between the neighbouring U-kx points
    `(energy, accuracy)`; None outside their range."""
    pts = sorted(uniform)
    for (e0, a0), (e1, a1) in zip(pts, pts[1:], strict=False):
        if e0 <= energy <= e1:
            t = 0.0 if e1 == e0 else (math.log(energy) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return a0 + t * (a1 - a0)
    return None


def collect(out: Path) -> dict:
    """The study's models: uniform baselines, each agent's episodes and retrained models."""
    missing = [a for a in AGENTS if not (out / a / "stage_c.json").is_file()]
    if missing:
        raise CimnasError(f"{out}: no stage_c.json for {', '.join(missing)}; run the study script first")
    uni = stage_c_uniform(out)
    agents = {}
    for a in AGENTS:
        eps = read_jsonl(out / a / "episodes.jsonl")
        models = []
        for label, v in read_json(out / a / "stage_c.json").items():
            if label.startswith("U-"):
                continue
            rec = next((r for r in eps if r["widths"] == v["widths"]), None)
            models.append({"label": label, "stage_c": v, "episode": rec})
        agents[a] = {"episodes": eps, "models": models}
    if len(uni) < 2:
        raise CimnasError(f"{out}: fewer than two U-kx baselines found (ddpg/stage_c.json or uniform/U-kx/)")
    return {"uniform": dict(sorted(uni.items(), key=lambda kv: kv[1]["energy_uj"])), "agents": agents}


def _rob(v: dict) -> str:
    r = v.get("robustness")
    return f"{100 * r['mean']:.2f} / {100 * r['p5']:.2f}" if r else "-"


def compare(out: str | Path, title: str | None = None) -> str:
    """Write OUT/compare.md and OUT/compare_fig1.png; returns the markdown."""
    import matplotlib  # lazy: matplotlib (+pyplot) costs 1.1-1.5 s to import, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr  # lazy: scipy.stats costs 2.1-2.5 s to import, this table only

    out = Path(out)
    data = collect(out)
    uni = data["uniform"]
    curve = [(v["energy_uj"], v["test_accuracy"]) for v in uni.values()]
    lines = ["| model | energy (uJ) | test acc. (%) | U-kx at same energy (%) | difference (points) | "
             "held-out acc. in search (%) | reward | robustness mean / p5 (%) |", "|---|---|---|---|---|---|---|---|"]
    for k, v in uni.items():
        lines.append(f"| {k} | {v['energy_uj']:.2f} | {100 * v['test_accuracy']:.2f} | - | - | - | - | {_rob(v)} |")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot([e for e, _ in curve], [100 * a for _, a in curve], "-s", c="#1f77b4", label="uniform U-kx (stage C, test)")
    for k, v in uni.items():
        ax.annotate(k, (v["energy_uj"], 100 * v["test_accuracy"]), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    pairs, summary = [], []
    for a, col, mk in (("ddpg", "#d62728", "*"), ("random", "#2ca02c", "P")):
        eps = data["agents"][a]["episodes"]
        ax.scatter([r["energy_uj"] for r in eps], [100 * r["accuracy"] for r in eps], s=8, c=col, alpha=0.25,
                   label=f"{a} candidates (held-out)")
        first_pareto = True
        for m in data["agents"][a]["models"]:
            v, rec = m["stage_c"], m["episode"]
            ref = interp_uniform(curve, v["energy_uj"])
            diff = "-" if ref is None else f"{100 * (v['test_accuracy'] - ref):+.2f}"
            refs = "-" if ref is None else f"{100 * ref:.2f}"
            ep = f" (ep. {rec['episode']})" if rec else ""
            held = f"{100 * rec['accuracy']:.2f}" if rec else "-"
            rew = f"{rec['reward']:+.4f}" if rec else "-"
            name = "best reward" if m["label"] == "searched" else "Pareto point"
            lines.append(f"| {a} {name}{ep} | {v['energy_uj']:.2f} | {100 * v['test_accuracy']:.2f} | {refs} | "
                         f"{diff} | {held} | {rew} | {_rob(v)} |")
            if rec:
                pairs.append((rec["accuracy"], v["test_accuracy"]))
            show = m["label"] == "searched" or first_pareto
            ax.plot(v["energy_uj"], 100 * v["test_accuracy"], mk, c=col, ms=12 if m["label"] == "searched" else 7,
                    label=f"{a} {name} (stage C, test)" if show else None)
            first_pareto = first_pareto and m["label"] == "searched"
        r = np.array([x["reward"] for x in eps])
        tail = r[-20:]
        summary.append(f"{a}: {len(r)} episodes, best reward {r.max():+.4f}, mean reward all {r.mean():+.4f}, "
                       f"last {len(tail)} {tail.mean():+.4f}")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (uJ)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"{out.name}: DDPG vs random search vs U-kx")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out / "compare_fig1.png", buf.getvalue())
    if len(pairs) > 2:
        rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
        lines.append(f"\nSpearman rho (search held-out acc. vs stage-C test acc., {len(pairs)} searched models): "
                     f"{rho:.2f}")
    lines += [""] + summary
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(out / "compare.md", text.encode())
    return text


# ============================================================================ CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cimnas.pipelines.studies.hawis_study",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("lambda", help="equal-reward lambda from the U-kx sub-nets of a pretrained super-net")
    q.add_argument("config")
    q.add_argument("pretrain_dir")
    q.add_argument("seed", type=int)
    q = sub.add_parser("lambda-val", help="equal-reward lambda from the stage-C U-kx validation accuracies")
    q.add_argument("out")
    q = sub.add_parser("uniform-widths", help="U-kx widths of a config as a YAML list")
    q.add_argument("config")
    q.add_argument("k", type=float)
    q = sub.add_parser("spread", help="stage-C test accuracy of U-kx over N training seeds (same data)")
    q.add_argument("config")
    q.add_argument("k", type=float)
    q.add_argument("n", type=int)
    q.add_argument("out_json")
    q.add_argument("--seed", type=int, default=0)
    q = sub.add_parser("compare", help="DDPG vs random vs U-kx: OUT/compare.md and OUT/compare_fig1.png")
    q.add_argument("out")
    q.add_argument("--title")
    args = p.parse_args(argv)
    try:
        if args.cmd == "lambda":
            print(f"{calibrate_lambda(args.config, args.pretrain_dir, args.seed)[0]:.4f}")
        elif args.cmd == "lambda-val":
            print(f"{calibrate_lambda_val(args.out)[0]:.4f}")
        elif args.cmd == "spread":
            r = seed_spread(args.config, args.k, args.n, args.out_json, args.seed)
            print(f"mean {100 * r['mean']:.2f} %, std {100 * r['std']:.2f} points, range {100 * r['min']:.2f}"
                  f" - {100 * r['max']:.2f} % over {len(r['accuracies'])} seeds")
        elif args.cmd == "uniform-widths":
            print("[" + ",".join(map(str, uniform_widths(args.config, args.k))) + "]")
        else:
            print(compare(args.out, args.title), end="")
    except CimnasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
