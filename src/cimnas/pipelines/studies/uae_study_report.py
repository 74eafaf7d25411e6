"""The report of a UAE study folder (`uae_study run`), read from its run folders only.

`report(out)` writes
- OUT/table3.md: UAE Table 3 over all seeds (clean accuracy, Monte-Carlo mean and 95%-minimum = p5 of every
  method as `mean +- std (n)` over seeds, std with ddof 1), each method's difference from QuantNAS and from NACIM
  with a 95 % interval, the cross retrains (architecture or training?), and one Table 3 per seed;
- OUT/search_stats.md: per seed, how each search went (rewards, cache hits, children at chance, the chosen child)
  and how well fewer noise samples rank the children of the search with the largest K;
- per seed, figures uae_study_rewards_seed<k>.png (reward over episodes) and uae_study_clean_vs_noisy_seed<k>.png
  (clean vs noisy accuracy of every child, and the chosen children's Monte-Carlo results).

Differences are paired by seed (the same seed gives every method the same data split and the same controller
initialisation): the mean of the per-seed differences over the seeds both methods ran, with its Student-t
interval (`cimnas.stats.mean_ci`); with one common seed there is no interval.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from cimnas.config import safe_yaml
from cimnas.errors import check
from cimnas.reports.figures import finish
from cimnas.stats import mean_ci, summarize
from cimnas.utils.io import atomic_write_bytes, read_json, read_jsonl

#: the methods every other one is compared with (folder names), when the study holds them
REFERENCES = ("quantnas", "nacim")
METRICS = (("clean_acc", "w/o noise"), ("mean", "MC mean"), ("p5", "95%-min (p5)"))
CROSS = re.compile(r"^(?P<m>.+)_arch_(?P<t>noise_aware|plain)$")
AT_CHANCE = 0.15  # a child below this clean accuracy learned nothing (10 classes)


# ============================================================================ reading the study folder
def _p5(f: dict) -> float:
    return f["p5"] if "p5" in f else f["p95"]  # final.json of older runs named the 5th percentile p95


def collect(out: str | Path) -> dict:
    """{"seeds", "methods" (study order), "finals": {method: {seed: final.json}}, "cross": {method: {seed: final}}}
    of every finished run folder under OUT/seed<k>/."""
    out = Path(out)
    check(out.is_dir(), f"{out} is not a folder; give the study folder of `uae_study run`")
    seeds = sorted(int(p.name[4:]) for p in out.iterdir() if p.is_dir() and re.fullmatch(r"seed\d+", p.name))
    finals: dict[str, dict[int, dict]] = {}
    cross: dict[str, dict[int, dict]] = {}
    for s in seeds:
        for f in sorted((out / f"seed{s}").glob("*/final.json")):
            finals.setdefault(f.parent.name, {})[s] = read_json(f)
        for f in sorted((out / f"seed{s}" / "cross").glob("*/final.json")):
            m = CROSS.match(f.parent.name)
            if m:
                cross.setdefault(m["m"], {})[s] = read_json(f)
    check(bool(finals), f"{out} holds no finished search (no seed<k>/<method>/final.json); run `uae_study run`")
    order = []
    if (out / "config.yaml").is_file():
        order = list((safe_yaml((out / "config.yaml").read_text(), str(out / "config.yaml")) or {}).get("methods", {}))
    methods = [m for m in order if m in finals] + sorted(m for m in finals if m not in order)
    return {"seeds": [s for s in seeds if any(s in finals[m] for m in methods)], "methods": methods,
            "finals": finals, "cross": cross}


def _value(f: dict, metric: str) -> float:
    return _p5(f) if metric == "p5" else f[metric]


def summary(out: str | Path) -> dict:
    """The numbers of table3.md: per method the `summarize` of each metric over seeds, the search time / episodes
    means, and the paired differences from each reference method ({ref: {method: {metric: {diff, low, high, n}}}})."""
    data = collect(out)
    finals = data["finals"]
    rows = {}
    for m in data["methods"]:
        fs = [finals[m][s] for s in sorted(finals[m])]
        rows[m] = {"label": fs[0]["label"], "k": fs[0]["k"], "statistic": fs[0]["statistic"],
                   "seeds": sorted(finals[m]),
                   **{metric: summarize([_value(f, metric) for f in fs]) for metric, _ in METRICS},
                   "search_time_h": float(np.mean([f["search_time_h"] for f in fs])),
                   "episodes": float(np.mean([f["episodes"] for f in fs])),
                   "unique_children": float(np.mean([f["unique_children"] for f in fs]))}
    diffs: dict = {}
    for ref in REFERENCES:
        if ref not in finals:
            continue
        diffs[ref] = {}
        for m in data["methods"]:
            common = sorted(set(finals[m]) & set(finals[ref]))
            if m == ref or not common:
                continue
            diffs[ref][m] = {}
            for metric, _ in METRICS:
                d = [_value(finals[m][s], metric) - _value(finals[ref][s], metric) for s in common]
                est, lo, hi = mean_ci(d)
                diffs[ref][m][metric] = {"diff": est, "low": lo, "high": hi, "n": len(common)}
    return {**data, "rows": rows, "diffs": diffs}


# ============================================================================ table3.md
def _pm(s: dict) -> str:
    return f"{100 * s['mean']:.2f} +- {100 * s['std']:.2f} ({s['n']})"


def _ci(d: dict | None) -> str:
    if d is None:
        return "-"
    if d["n"] < 2:
        return f"{100 * d['diff']:+.2f} (1 seed, no interval)"
    return f"{100 * d['diff']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] ({d['n']})"


def _triple(f: dict) -> str:
    return f"{100 * f['clean_acc']:.2f} / {100 * f['mean']:.2f} / {100 * _p5(f):.2f}"


def table3_markdown(sm: dict, out: str | Path = "") -> str:
    """table3.md's text from `summary(out)`."""
    seeds = ", ".join(map(str, sm["seeds"]))
    lines = [f"# UAE Table 3 over seeds {seeds} ({out})", "",
             "Test accuracy in %, `mean +- std (n seeds)` over seeds (std ddof 1); each run's numbers are the chosen "
             "child's clean accuracy and the mean / 5th percentile (95%-min) of its final Monte-Carlo accuracies.", "",
             "| Method | K | reward | w/o noise | MC mean | 95%-min (p5) | search time (h, mean) "
             "| episodes (unique), mean |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sm["rows"].values():
        lines.append(f"| {r['label']} | {r['k']} | {r['statistic'] if r['k'] else 'clean'} | {_pm(r['clean_acc'])} | "
                     f"{_pm(r['mean'])} | {_pm(r['p5'])} | {r['search_time_h']:.3f} | "
                     f"{r['episodes']:g} ({r['unique_children']:g}) |")
    if sm["diffs"]:
        refs = list(sm["diffs"])
        lines += ["", "Differences in points, paired by seed: mean of the per-seed differences [95 % Student-t "
                  "interval] (n common seeds).", "",
                  "| Method | metric | " + " | ".join(f"- {sm['rows'][r]['label']}" for r in refs) + " |",
                  "|---|---|" + "---|" * len(refs)]
        for m, r in sm["rows"].items():
            if all(m == ref or m not in sm["diffs"][ref] for ref in refs):
                continue
            for metric, name in METRICS:
                cells = [_ci(sm["diffs"][ref].get(m, {}).get(metric)) for ref in refs]
                lines.append(f"| {r['label']} | {name} | " + " | ".join(cells) + " |")
    if sm["cross"]:
        lines += ["", "Cross retrains (architecture or training?): each chosen child retrained with the other training "
                  "(train.noise_aware flipped), same final seed, epochs and samples; w/o noise / MC mean / 95%-min, "
                  "mean over the seeds both ran.", "",
                  "| chosen child of | training in its search | as searched | other training | retrained | seeds |",
                  "|---|---|---|---|---|---|"]
        for m in sm["rows"]:
            common = sorted(set(sm["cross"].get(m, {})) & set(sm["finals"][m]))
            if not common:
                continue
            own = _mean_final([sm["finals"][m][s] for s in common])
            other = _mean_final([sm["cross"][m][s] for s in common])
            na = sm["finals"][m][common[0]]["noise_aware"]
            lines.append(f"| {sm['rows'][m]['label']} | {'noise-aware' if na else 'plain'} | {_triple(own)} | "
                         f"{'plain' if na else 'noise-aware'} | {_triple(other)} | {len(common)} |")
    for s in sm["seeds"]:
        lines += ["", f"## Seed {s}", "", "| Method | K | w/o noise | mean | 95%-min (p5) | std | min | MC samples | "
                  "search time (h) | episodes (unique) | energy (uJ) | chosen child |", "|---" * 12 + "|"]
        for m in sm["rows"]:
            f = sm["finals"][m].get(s)
            if f is not None:
                lines.append(f"| {f['label']} | {f['k']} | {_triple(f).replace(' / ', ' | ')} | {100 * f['std']:.2f} | "
                             f"{100 * f['min']:.2f} | {f['mc_samples']} | {f['search_time_h']:.3f} | {f['episodes']} "
                             f"({f['unique_children']}) | {_energy(f)} | `{f['arch_key']}` |")
    return "\n".join(lines) + "\n"


def _energy(f: dict) -> str:
    return "-" if f.get("energy_uj") is None else f"{f['energy_uj']:.3g}"


def _mean_final(fs: list[dict]) -> dict:
    return {"clean_acc": float(np.mean([f["clean_acc"] for f in fs])), "mean": float(np.mean([f["mean"] for f in fs])),
            "p5": float(np.mean([_p5(f) for f in fs]))}


# ============================================================================ figures (per seed)
def _logs(seed_dir: Path, methods: list[str]) -> dict[str, list[dict]]:
    return {m: read_jsonl(seed_dir / m / "episodes.jsonl") for m in methods
            if (seed_dir / m / "episodes.jsonl").is_file()}


def seed_figures(seed_dir: Path, seed: int, methods: list[str], labels: dict, fig_dir: Path) -> list[Path]:
    """The two figures of one seed (module doc); returns their paths."""
    import matplotlib.pyplot as plt  # lazy: matplotlib costs 1.1-1.5 s to import, figures only

    logs = _logs(seed_dir, methods)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.5 * len(methods), 3.2), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, m in zip(axes, methods, strict=True):
        rew = [r["reward"] for r in logs.get(m, [])]
        ep = [r["episode"] for r in logs.get(m, [])]
        win = 10
        ax.scatter(ep, rew, s=7, alpha=0.6, label="reward")
        ax.plot(ep, np.maximum.accumulate(rew) if rew else [], color="C3", label="best so far")
        ax.plot(ep, [float(np.mean(rew[max(0, i - win + 1):i + 1])) for i in range(len(rew))], color="C2",
                label=f"mean of last {win}")
        ax.set_title(labels[m])
        ax.set_xlabel("episode")
    paths = [finish(fig, axes[0], fig_dir / f"uae_study_rewards_seed{seed}.png", xlabel="episode", ylabel="reward",
                    dpi=110)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    for i, m in enumerate(methods):
        fresh = [r for r in logs.get(m, []) if not r["cache_hit"] and r["noisy"]]
        if fresh:
            left.scatter([r["clean_acc"] for r in fresh], [r["noisy"]["mean"] for r in fresh], s=9, alpha=0.6,
                         color=f"C{i}", label=f"{labels[m]} children")
        if (seed_dir / m / "final.json").is_file():
            f = read_json(seed_dir / m / "final.json")
            left.scatter([f["clean_acc"]], [f["mean"]], marker="*", s=180, color=f"C{i}", edgecolor="k",
                         label=f"{labels[m]} final (test, MC)")
            right.errorbar([i], [f["mean"]], yerr=[[f["mean"] - _p5(f)], [0]], fmt="o", color=f"C{i}", capsize=4)
            right.scatter([i], [f["clean_acc"]], marker="_", s=300, color=f"C{i}")
    left.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    right.set_xticks(range(len(methods)), [labels[m] for m in methods])
    right.set_ylabel("test accuracy")
    right.set_title("chosen child: clean (-), MC mean (o) down to 95%-min", fontsize=10)
    paths.append(finish(fig, left, fig_dir / f"uae_study_clean_vs_noisy_seed{seed}.png", xlabel="clean accuracy",
                        ylabel="mean accuracy under noise", title="children (search_eval) and chosen child (test)",
                        title_size=10, dpi=110))
    return paths


# ============================================================================ search_stats.md (per seed)
def _rho(a: list[float], b: list[float]) -> str:
    r = spearmanr(a, b).statistic if len(a) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")
    return "n/a" if not np.isfinite(r) else f"{r:.3f}"


def search_stats(seed_dir: Path, methods: list[str], labels: dict) -> str:
    """One seed's search statistics (markdown)."""
    logs = _logs(seed_dir, methods)
    lines = ["| Method | episodes | unique children | cache hits | children at chance (clean < 15%) | mean reward, "
             "first 10 | mean reward, last 10 | best reward "
             "| chosen child (search_eval: clean / noisy mean / p5 of K) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, log in logs.items():
        if not log:
            continue
        rew = [r["reward"] for r in log]
        fresh = [r for r in log if not r["cache_hit"]]
        b = max(log, key=lambda r: r["reward"])
        nz = b["noisy"]
        ch = f"{100 * b['clean_acc']:.1f} / " + (f"{100 * nz['mean']:.1f} / {100 * _p5(nz):.1f}" if nz else "- / -")
        lines.append(f"| {labels[m]} | {len(log)} | {len(fresh)} | {len(log) - len(fresh)} | "
                     f"{sum(r['clean_acc'] < AT_CHANCE for r in fresh)} | {np.mean(rew[:10]):.3f} | "
                     f"{np.mean(rew[-10:]):.3f} | {max(rew):.3f} | `{b['arch_key']}`: {ch} |")
    ks = {m: len(next((r["noisy_accs"] for r in log if not r["cache_hit"]), [])) for m, log in logs.items() if log}
    big = max(ks, key=lambda m: ks[m], default=None)
    kref = ks.get(big, 0)
    kids = [r for r in logs.get(big, []) if not r["cache_hit"]]
    if kref >= 2 and len(kids) >= 3:
        lines += ["", _ranking(kids, kref, sorted({k for k in ks.values() if 1 <= k < kref}), labels[big])]
    for m, log in logs.items():
        plain = [r["clean_acc"] for r in log if not r["cache_hit"]]
        if ks.get(m) == 0 and plain:
            lines.append(f"\n{labels[m]} children (clean reward): clean accuracy {100 * np.mean(plain):.1f}% "
                         f"on average (min {100 * min(plain):.1f}%, max {100 * max(plain):.1f}%) "
                         f"over {len(plain)} children")
    return "\n".join(lines) + "\n"


def _ranking(kids: list[dict], kref: int, smaller: list[int], label: str) -> str:
    """How well the first k of the K noisy accuracies (what a K = k search measures for the same child trained the
    same way: trial t is drawn from its index) and the clean accuracy rank the children like the K mean / p5."""
    full = [float(np.mean(r["noisy_accs"])) for r in kids]
    p5s = [_p5(r["noisy"]) for r in kids]
    est = {f"K={k} mean" if k > 1 else "K=1": [float(np.mean(r["noisy_accs"][:k])) for r in kids] for k in smaller}
    est["clean"] = [r["clean_acc"] for r in kids]
    out = [f"{label}'s {len(kids)} children (K = {kref} noisy accuracies each; the first k of them are what a K = k "
           "search measures for the same child trained the same way):",
           f"- Spearman vs the K={kref} mean: " + ", ".join(f"{n} {_rho(v, full)}" for n, v in est.items())
           + f", K={kref} p5 {_rho(p5s, full)}",
           f"- Spearman vs the K={kref} p5: " + ", ".join(f"{n} {_rho(v, p5s)}" for n, v in est.items())]
    if 1 in smaller:
        gap = 100 * np.mean(np.abs(np.subtract(est["K=1"], full)))
        spread = 100 * np.mean([r["noisy"]["std"] for r in kids])
        out.append(f"- mean |K=1 - K={kref} mean| = {gap:.2f} points; "
                   f"mean std of the K={kref} accuracies = {spread:.2f} points")
    firsts = {**est, f"K={kref} p5": p5s}
    out.append("- child ranked first by: " + ", ".join(
        f"{n} `{kids[int(np.argmax(v))]['arch_key']}` (K={kref} mean {100 * full[int(np.argmax(v))]:.1f})"
        for n, v in firsts.items()))
    return "\n".join(out)


# ============================================================================ table3.json + its figure
def _retrain_values(f: dict, metric: str) -> list[float]:
    """The per-retrain values of one final.json (one value for runs made before `final.retrains`)."""
    return [_value(r, metric) for r in f["retrains"]] if "retrains" in f else [_value(f, metric)]


def table3_json(sm: dict) -> dict:
    """Table 3 as data (docs/results/uae_table3.json): per method the summaries over search seeds of each seed's
    mean over retrains, the retrain spread, the paired differences from the references, and the cross arm."""
    methods = []
    for m, r in sm["rows"].items():
        fs = [sm["finals"][m][s] for s in r["seeds"]]
        cross = sm["cross"].get(m, {})
        methods.append({
            "method": m, "label": r["label"], "k": r["k"], "statistic": r["statistic"], "search_seeds": r["seeds"],
            "retrains_per_seed": [len(_retrain_values(f, "mean")) for f in fs],
            "mc_samples": min(f["mc_samples"] for f in fs),
            **{metric: {k: r[metric][k] for k in ("mean", "std", "n")} for metric, _ in METRICS},
            "retrain_std_mean": {metric: float(np.mean([np.std(v, ddof=1) for v in
                                                        (_retrain_values(f, metric) for f in fs) if len(v) > 1]))
                                 if any(len(_retrain_values(f, metric)) > 1 for f in fs) else None
                                 for metric, _ in METRICS},
            "per_seed": {str(s): {metric: _retrain_values(sm["finals"][m][s], metric) for metric, _ in METRICS}
                         for s in r["seeds"]},
            "diff_from": {ref: sm["diffs"][ref][m] for ref in sm["diffs"] if m in sm["diffs"][ref]},
            "cross": {"noise_aware_in_search": fs[0]["noise_aware"],
                      "per_seed": {str(s): {metric: _retrain_values(f, metric) for metric, _ in METRICS}
                                   for s, f in sorted(cross.items())}} if cross else None,
            "search_time_h": r["search_time_h"], "episodes": r["episodes"]})
    return {"format": "cimnas-uae-table3-v1", "seeds": sm["seeds"],
            "units": "accuracies as fractions; std with ddof 1; diffs paired by search seed, 95 % Student-t interval",
            "methods": methods}


def table3_figure(t3: dict, path: Path) -> Path:
    """Clean / MC mean / 95%-min of every method: mean over search seeds with std error bars, each retrain a dot;
    the cross arm (same child, other training) as open markers."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is only needed for figures

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.25
    for j, (metric, name) in enumerate(METRICS):
        xs = np.arange(len(t3["methods"])) + (j - 1) * width
        ys = [100 * m[metric]["mean"] for m in t3["methods"]]
        es = [100 * (m[metric]["std"] if m[metric]["n"] > 1 else 0.0) for m in t3["methods"]]
        ax.errorbar(xs, ys, yerr=es, fmt="o", capsize=4, label=f"{name} (mean +- std over search seeds)", color=f"C{j}")
        for x, m in zip(xs, t3["methods"], strict=True):
            dots = [100 * v for seed in m["per_seed"].values() for v in seed[metric]]
            ax.plot([x + 0.06] * len(dots), dots, ".", color=f"C{j}", alpha=0.4, markersize=4)
            if m["cross"]:
                other = [100 * v for seed in m["cross"]["per_seed"].values() for v in seed[metric]]
                ax.plot([x - 0.06] * len(other), other, "x", color=f"C{j}", alpha=0.6, markersize=4)
    ax.set_xticks(np.arange(len(t3["methods"])), [m["label"] for m in t3["methods"]])
    return finish(fig, ax, path, xlabel="method", ylabel="test accuracy (%)", title="UAE Table 3: dots = retrains "
                  "of the chosen child, x = the same child with the other training", title_size=9)


# ============================================================================ report
def report(out: str | Path, figures_dir: str | Path | None = None, json_out: str | Path | None = None) -> str:
    """Write OUT/table3.md, OUT/table3.json, OUT/search_stats.md and the figures (in `figures_dir`, default
    OUT/figures: uae_table3.png and the per-seed ones); with `json_out` table3.json is also written there;
    returns table3.md's text."""
    out = Path(out)
    sm = summary(out)
    t3 = table3_json(sm)
    blob = (json.dumps(t3, indent=1) + "\n").encode()
    atomic_write_bytes(out / "table3.json", blob)
    if json_out is not None:
        atomic_write_bytes(Path(json_out), blob)
    labels = {m: r["label"] for m, r in sm["rows"].items()}
    text = table3_markdown(sm, out)
    atomic_write_bytes(out / "table3.md", text.encode())
    stats = [f"# Search statistics ({out})"]
    fig_dir = Path(figures_dir) if figures_dir is not None else out / "figures"
    for s in sm["seeds"]:
        seed_dir = out / f"seed{s}"
        methods = [m for m in sm["methods"] if (seed_dir / m / "episodes.jsonl").is_file()]
        stats += ["", f"## Seed {s}", "", search_stats(seed_dir, methods, labels)]
        seed_figures(seed_dir, s, methods, labels, fig_dir)
    atomic_write_bytes(out / "search_stats.md", "\n".join(stats).encode())
    table3_figure(t3, fig_dir / "uae_table3.png")
    return text
