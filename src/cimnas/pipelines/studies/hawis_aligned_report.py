"""Analysis and figure of the aligned-HAWIS study (`hawis_aligned`): per net its seeds' validation and test
accuracy and its difference from its aligned-uniform baseline, per search arm the difference averaged over its
search seeds (with a second, wider interval over the search seeds themselves), the verdict (taken on validation
accuracy), and the smallest difference the design detects (two-sided 5 %, 80 % power).

Every net trains with the same training seeds 0..n-1, and a seed does much the same to every net (its data order and
validation draw: on the U-kx and aligned-uniform nets of this study the seed-matched test accuracies correlate at
r = 0.40-0.54), so the primary comparison is **paired by seed** (`*_vs_baseline_paired`: the t interval of the
per-seed differences, `cimnas.stats.paired_ci`; per arm the per-seed mean over its search seeds of net minus
baseline; design `detectable_points_paired`, `detectable_paired`). The unpaired Welch intervals (`diff_ci`,
`combination_ci`, `detectable_points`) are kept beside them.

Accuracies are in percent, differences in percentage points (`*_pct`, `*_points`). A net with fewer than
`retrain_seeds` finished seeds reports the n it has; comparisons need at least 2 seeds on each side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cimnas.reports.figures import finish
from cimnas.stats import (
    combination_ci,
    detectable_difference,
    detectable_paired,
    diff_ci,
    mean_ci,
    paired_ci,
    summarize,
)

KEYS = (("val", "val_acc"), ("test", "test_acc"))


def _values(row: dict, key: str) -> list[float]:
    return [100.0 * r[key] for r in row["runs"] if r.get(key) is not None]


def _by_seed(row: dict, key: str) -> dict[int, float]:
    return {int(r["seed"]): 100.0 * r[key] for r in row["runs"] if r.get(key) is not None and "seed" in r}


def _interval(est: float, lo: float, hi: float, n: int | None = None) -> dict:
    return {"diff_points": est, "ci95_points": [lo, hi], **({"n_pairs": n} if n is not None else {})}


def _arm_paired(nets: list[dict], by: dict, key: str) -> dict | None:
    """Per seed held by every net and baseline of the arm: the mean over its nets of net minus baseline."""
    pairs = [(_by_seed(r, key), _by_seed(by[r["baseline"]], key)) for r in nets]
    if not pairs:
        return None
    seeds = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs)))
    if len(seeds) < 2:
        return None
    d = [float(np.mean([a[k] - b[k] for a, b in pairs])) for k in seeds]
    return _interval(*mean_ci(d), len(seeds))


def _arm_by_search(nets: list[dict], key: str) -> dict | None:
    """The t interval over the arm's search seeds of each net's paired difference: it counts how much the searched
    net varies from one search seed to the next, which the interval over training seeds holds fixed."""
    d = [r[f"{key}_vs_baseline_paired"]["diff_points"] for r in nets if r.get(f"{key}_vs_baseline_paired")]
    if len(d) < 2 or len(d) < len(nets):
        return None
    return {**_interval(*mean_ci(d)), "n_searches": len(d)}


def verdict(iv: dict | None) -> str:
    if iv is None:
        return "not enough seeds yet"
    lo, hi = iv["ci95_points"]
    return "above the baseline" if lo > 0 else "below the baseline" if hi < 0 else "no difference detected"


def analyse(rows: list[dict], planned_n: int, searches: dict[str, list[dict]] | None = None,
            q_ref: float = 1.0) -> dict:
    """The study's JSON: per net and per arm the differences from the baselines, the design, and with `searches`
    (finished searches' episodes by label) the proxy drift of each (`proxy_drift`, energies relative to `q_ref`)."""
    by = {r["label"]: r for r in rows}
    out = []
    for r in rows:
        row = {k: r[k] for k in ("label", "kind", "widths", "energy_uj", "arm", "search_seed", "proxy", "baseline",
                                 "from_width_mult") if k in r}
        row["n"] = len(r["runs"])
        for name, key in KEYS:
            v = _values(r, key)
            if v:
                s = summarize(v)
                row[name] = {"n": s["n"], "mean_pct": s["mean"], "std_pct": s["std"]}
            b = by.get(r.get("baseline", ""))
            w = _values(b, key) if b is not None else []
            if len(v) >= 2 and len(w) >= 2:
                row[f"{name}_vs_baseline"] = _interval(*diff_ci(v, w))
            pc = paired_ci(_by_seed(r, key), _by_seed(b, key)) if b is not None else None
            if pc is not None:
                row[f"{name}_vs_baseline_paired"] = _interval(*pc)
        out.append(row)
    done = {r["label"]: r for r in out}
    arms = {}
    for arm in sorted({r["arm"] for r in rows if r.get("arm")}):
        mine = [r for r in rows if r.get("arm") == arm]
        nets = [r for r in mine if r.get("baseline")]  # a net that is aligned-uniform itself has no other baseline
        entry: dict = {"nets": [r["label"] for r in nets],
                       "aligned_uniform_nets": [r["label"] for r in mine if not r.get("baseline")]}
        for name, key in KEYS:
            coef: dict[str, float] = {}
            for r in nets:
                coef[r["label"]] = coef.get(r["label"], 0.0) + 1.0 / len(nets)
                coef[r["baseline"]] = coef.get(r["baseline"], 0.0) - 1.0 / len(nets)
            samples = [_values(by[lab], key) for lab in coef]
            if samples and all(len(s) >= 2 for s in samples):
                entry[f"{name}_vs_baseline"] = _interval(*combination_ci(samples, list(coef.values())))
            pa = _arm_paired(nets, by, key)
            if pa is not None:
                entry[f"{name}_vs_baseline_paired"] = pa
            bs = _arm_by_search([done[r["label"]] for r in nets], name)
            if bs is not None:
                entry[f"{name}_vs_baseline_by_search"] = bs
        entry["verdict_on_val"] = verdict(entry.get("val_vs_baseline_paired"))
        entry["verdict_on_val_welch"] = verdict(entry.get("val_vs_baseline"))
        arms[arm] = entry
    stds = [r[name]["std_pct"] for r in out for name, _ in KEYS if r.get(name, {}).get("n", 0) >= 2]
    pooled = float(np.sqrt(np.mean(np.square(stds)))) if stds else None
    # the spread of seed-matched differences, over every net with a baseline (U-1x's from the start of the study)
    dstd = [float(np.std([a[k] - b[k] for k in set(a) & set(b)], ddof=1)) for r in rows if r.get("baseline")
            for _, key in KEYS for a, b in [(_by_seed(r, key), _by_seed(by[r["baseline"]], key))]
            if len(set(a) & set(b)) >= 2]
    pooled_d = float(np.sqrt(np.mean(np.square(dstd)))) if dstd else None
    design = {"planned_seeds_per_net": planned_n, "pooled_seed_std_points": pooled,
              "detectable_points": detectable_difference(pooled, planned_n, planned_n) if pooled else None,
              "test": "two-sided Welch t, 5 %, power 80 %",
              "paired_diff_std_points": pooled_d,
              "detectable_points_paired": detectable_paired(pooled_d, planned_n) if pooled_d else None,
              "test_paired": "two-sided paired t over training seeds, 5 %, power 80 % (the verdict)"}
    drift = proxy_drift(searches or {}, q_ref)
    return {"rows": out, "arms": arms, "design": design, "proxy_drift": drift,
            "summary": summary_text(out, arms, design, drift)}


def proxy_drift(searches: dict[str, list[dict]], q_ref: float, window: int = 10) -> dict:
    """Per search, how its proxy accuracy (percent) moves with the episode: the least-squares fit
    acc = a + b * episode + c * log(energy / q_ref) (b: points per episode, c: points per e-fold of energy), the
    correlation of episode and proxy accuracy, and the mean proxy accuracy of the first and the last `window`
    episodes. A proxy that drifts up with the episode (the super-net is fine-tuned in every episode) makes the
    best-reward episode a late one whatever its widths."""
    out = {}
    for label, eps in searches.items():
        if len(eps) < max(4, 2 * window):
            continue
        ep = np.array([e["episode"] for e in eps], dtype=float)
        acc = 100.0 * np.array([e["accuracy"] for e in eps])
        x = np.column_stack([np.ones_like(ep), ep, np.log(np.array([e["energy_uj"] for e in eps]) / q_ref)])
        coef = np.linalg.lstsq(x, acc, rcond=None)[0]
        order = np.argsort(ep)
        out[label] = {"episodes": len(eps), "points_per_episode": float(coef[1]),
                      "points_per_efold_energy": float(coef[2]),
                      "corr_episode_accuracy": float(np.corrcoef(ep, acc)[0, 1]),
                      f"first_{window}_pct": float(acc[order[:window]].mean()),
                      f"last_{window}_pct": float(acc[order[-window:]].mean())}
    return out


def summary_text(rows: list[dict], arms: dict, design: dict, drift: dict | None = None) -> str:
    def acc(r: dict, k: str) -> str:
        s = r.get(k)
        return f"{s['mean_pct']:.2f} +- {s['std_pct']:.2f}" if s else "-"

    def diff(d: dict | None) -> str:
        return f"{d['diff_points']:+.2f} [{d['ci95_points'][0]:+.2f}, {d['ci95_points'][1]:+.2f}]" if d else "-"

    lines = ["| net | kind | energy µJ | n | val % | test % | val - baseline, paired | test - baseline, paired "
             "| test - baseline, Welch | baseline |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['kind']} | {r['energy_uj']:.4g} | {r['n']} | {acc(r, 'val')} | "
                     f"{acc(r, 'test')} | {diff(r.get('val_vs_baseline_paired'))} | "
                     f"{diff(r.get('test_vs_baseline_paired'))} | {diff(r.get('test_vs_baseline'))} | "
                     f"{r.get('baseline', '')} |")
    for arm, e in arms.items():
        lines.append(f"\n{arm} ({len(e['nets'])} search seeds) vs its aligned-uniform baselines, paired by seed: val "
                     f"{diff(e.get('val_vs_baseline_paired'))}, test {diff(e.get('test_vs_baseline_paired'))} points: "
                     f"{e['verdict_on_val']} (decided on validation; Welch: {e['verdict_on_val_welch']}); over search "
                     f"seeds: val {diff(e.get('val_vs_baseline_by_search'))}, test "
                     f"{diff(e.get('test_vs_baseline_by_search'))}")
    if design["detectable_points"] is not None:
        lines.append(f"\nDesign: {design['planned_seeds_per_net']} seeds per net, pooled seed std "
                     f"{design['pooled_seed_std_points']:.2f} points -> smallest detectable difference "
                     f"{design['detectable_points']:.2f} points ({design['test']}).")
    if design.get("detectable_points_paired") is not None:
        lines.append(f"Paired by seed: std of the seed-matched differences {design['paired_diff_std_points']:.2f} "
                     f"points -> smallest detectable difference {design['detectable_points_paired']:.2f} points "
                     f"({design['test_paired']}).")
    if drift:
        lines.append("")
    for k, d in (drift or {}).items():
        lines.append(f"proxy drift {k}: {d['points_per_episode']:+.3f} points per episode, "
                     f"{d['points_per_efold_energy']:+.2f} per e-fold of energy, corr(episode, proxy) "
                     f"{d['corr_episode_accuracy']:.2f}, first / last 10 episodes {d['first_10_pct']:.1f} / "
                     f"{d['last_10_pct']:.1f} %")
    return "\n".join(lines) + "\n"


def plot(result: dict, proxy: dict[str, list[dict]], path: Path) -> None:
    """Left: test accuracy of the trained nets (mean +- std over seeds). Right: the searches' proxy accuracies."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4))
    rows = [r for r in result["rows"] if "test" in r]
    uni = sorted((r for r in rows if r["kind"] == "uniform"), key=lambda r: r["energy_uj"])
    if uni:
        ax.errorbar([r["energy_uj"] for r in uni], [r["test"]["mean_pct"] for r in uni],
                    yerr=[r["test"]["std_pct"] for r in uni], fmt="o-", color="k", capsize=3, label="U-kx")
    # one colour per search arm in both panels, none of them the aligned-uniform nets' green
    arms = sorted({r["arm"] for r in rows if r.get("arm")} | set(proxy))
    palette = ["tab:blue", "tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    styles = {"aligned-uniform": ("s", "tab:green"),
              **{a: (["^", "v", "D", "P", "X", "*"][i % 6], palette[i % len(palette)]) for i, a in enumerate(arms)}}
    for key in ["aligned-uniform"] + arms:
        pts = [r for r in rows if (r["kind"] == key or r.get("arm") == key)]
        if not pts:
            continue
        m, c = styles[key]
        ns = sorted({r["test"]["n"] for r in pts})
        ax.errorbar([r["energy_uj"] for r in pts], [r["test"]["mean_pct"] for r in pts],
                    yerr=[r["test"]["std_pct"] for r in pts], fmt=m, color=c, capsize=3,
                    label=f"{key} (n = {ns[0]}" + (f"-{ns[-1]})" if len(ns) > 1 else ")"))
    for a in (ax, bx):
        a.set_xscale("log")
        a.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 2, 3, 5, 10 rather than one 10^1
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a short range
    ax.set_xlabel("crossbar energy per inference (µJ)")
    ax.set_ylabel("test accuracy (%), trained nets, mean +- std over seeds")
    ax.set_title("Trained nets")
    if uni or len(rows):
        ax.legend(fontsize=8)
    for arm, eps in proxy.items():
        if eps:
            bx.scatter([e["energy_uj"] for e in eps], [100 * e["accuracy"] for e in eps], s=8, alpha=0.5, label=arm,
                       color=styles[arm][1])
    finish(fig, bx, path, xlabel="crossbar energy per inference (µJ)",
           ylabel="held-out accuracy in the search (%), proxy", title="Search proxy (every episode)",
           legend=any(proxy.values()))
