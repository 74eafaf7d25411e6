"""Reading a HAWIS study folder: the U-kx baselines, each agent's episodes and retrained models, and the
DDPG vs random vs U-kx comparison (`compare`: compare.md + compare_fig1.png).

A study folder OUT holds `ddpg/` and `random/` HAWIS run folders (same super-net, seed and episode count)
and the U-kx baselines either as `U-kx` entries of `ddpg/stage_c.json` or as their own run folders
`uniform/U-kx/` (stage C of `retrain.widths`, with robustness). `compare` puts every model on one
Fig. 1-style plot and tabulates, for each retrained searched model, the U-kx accuracy interpolated at its
energy (linear in log-energy between the two neighbouring baselines): the paper's claim (Fig. 1) is that
searched widths lie above the uniform curve. Test accuracies appear here only as final numbers.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from cimnas.errors import CimnasError
from cimnas.reports.figures import readable_axes
from cimnas.utils.io import atomic_write_bytes, read_json, read_jsonl

AGENTS = ("ddpg", "random")


def stage_c_uniform(out: Path) -> dict[str, dict]:
    """The study's stage-C U-kx results: `U-kx` entries of `ddpg/stage_c.json` and `uniform/U-kx/` run folders."""
    uni: dict[str, dict] = {}
    for sc in [out / a / "stage_c.json" for a in AGENTS]:
        if sc.is_file():
            uni.update({k: v for k, v in read_json(sc).items() if k.startswith("U-")})
    for sc in sorted((out / "uniform").glob("U-*/stage_c.json")):
        uni[sc.parent.name] = read_json(sc)["searched"]
    return uni


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
    readable_axes(ax)
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


