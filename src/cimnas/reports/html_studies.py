"""The HTML report's sections for studies (headroom, HAWIS study, UAE study), any other run, and the side-by-side
comparison of several folders. Reads the folders' files only; every table of repeated measurements gives mean,
std (ddof 1), n and the 95 % Student-t interval of the mean (cimnas.stats)."""

from __future__ import annotations

import re

from cimnas.reports.folder import Folder, open_folder
from cimnas.reports.html import (
    STAT_HEADS,
    Page,
    ci_from_summary,
    esc,
    figure,
    folder_pngs,
    int_x,
    markdown,
    mean_std_ci,
    num,
    pct,
    plt,
    table,
)
from cimnas.reports.html_runs import config_section, log_section, seed_spreads
from cimnas.reports.summary import is_aligned, is_uniform, run_facts
from cimnas.stats import summarize


# ============================================================================ studies
def study_sections(page: Page, f: Folder, prefix: str = "") -> None:
    fn = {"study-headroom": _headroom, "hawis-study": _hawis_study, "uae-study": _uae_study,
          "study-hawis-aligned": _hawis_aligned}[f.kind or ""]
    page.build(prefix + f.kind_name, f, lambda: fn(f))
    page.build(prefix + "Figures the study wrote", f, lambda: folder_pngs(f, "", "figures"))
    page.build(prefix + "Config", f, lambda: config_section(f) + log_section(f))


def _headroom(f: Folder) -> str:
    res = f.json("headroom.json")
    if not res:
        f.problem("no headroom.json: no model of the study has finished; the table is not shown")
        return ""
    rows, fig_pts = [], []
    for r in res["rows"]:
        t = r.get("test_acc")
        stats = mean_std_ci(t["values"]) if t else ["-"] * 4
        v = r.get("val_acc")
        d = r.get("test_acc_vs_uniform") or {}
        diff = ("outside the curve" if d and not d.get("inside_curve") else
                f"{100 * d['diff']:+.2f} [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]" if d else "")
        rows.append([r["label"], r["kind"], num(r["energy_uj"], ".4g"), *stats,
                     f"{pct(v['mean'])} ± {pct(v['std'])}" if v else "-", diff])
        if t:
            fig_pts.append((r, t))
    out = table(["model", "kind", "energy (µJ)", *(f"test {h}" for h in STAT_HEADS), "held-out mean ± std",
                 "test diff vs uniform curve, points [95 % CI]"], rows, "each model trained from scratch per seed")
    if fig_pts:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        uni = [(r, t) for r, t in fig_pts if r["kind"] == "uniform"]
        if uni:
            e = [r["energy_uj"] for r, _ in uni]
            m = [100 * t["mean"] for _, t in uni]
            s = [100 * t["std"] for _, t in uni]
            ax.plot(e, m, "o-", c="k", label="uniform U-kx (mean)")
            ax.fill_between(e, [a - b for a, b in zip(m, s, strict=True)], [a + b for a, b in zip(m, s, strict=True)],
                            color="k", alpha=0.15, label="uniform ± 1 std")
        for r, t in fig_pts:
            if r["kind"] != "uniform":
                ax.errorbar([r["energy_uj"]], [100 * t["mean"]], yerr=[100 * t["std"]], fmt="s", capsize=4,
                            label=f"{r['label']} (n = {t['n']})")
        ax.set_xscale("log")
        ax.set_xlabel("crossbar energy per inference (µJ)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        out = figure(fig, "headroom") + out
    return out


def _hawis_study(f: Folder) -> str:
    out = ""
    text = f.text("compare.md")
    if text:
        out += markdown(text)
    else:
        f.problem("no compare.md: the DDPG vs random vs U-kx comparison has not been written (`hawis_study compare`)")
    lam = f.text("lambda.txt")
    if lam:
        out += f"<p class='muted'>lambda (calibrated): {esc(lam.strip())}</p>"
    subs = [f.path / n for n in ("pretrain", "ddpg", "random")] + sorted((f.path / "uniform").glob("U-*"))
    runs = [open_folder(p) for p in subs if p.is_dir()]
    rows = []
    for r in runs:
        final = r.json("final.json") or {}
        rob = final.get("robustness") or {}
        row = [str(r.path.relative_to(f.path)), pct(final.get("test_accuracy")), num(final.get("energy_uj"), ".4g")]
        if rob:
            row += [pct(rob["mean"]), pct(rob["std"]), str(rob.get("trials")),
                    ci_from_summary(rob["mean"], rob["std"], int(rob.get("trials") or 0))]
        rows.append(row + ["-"] * (7 - len(row)))
        f.problems.extend(p for p in r.problems if "still writing" in p)
    if rows:
        out += table(["run", "test acc.", "energy (µJ)", *(f"under defects: {h}" for h in STAT_HEADS)], rows,
                     "the study's HAWIS run folders (robustness: Monte-Carlo trials of stage C)")
    return out + seed_spreads(f)



def _hawis_aligned(f: Folder) -> str:
    """The aligned-HAWIS study (`hawis_aligned`, issue 20): hawis_aligned.json holds per net its seeds' accuracies
    in percent ({n, mean_pct, std_pct}) and its difference from its aligned-uniform baseline (Welch interval)."""
    res = f.json("hawis_aligned.json")
    if not res:
        f.problem("no hawis_aligned.json: no model of the study has finished; its table is not shown")
        return ""

    def diff(d: dict | None) -> str:
        return f"{d['diff_points']:+.2f} [{d['ci95_points'][0]:+.2f}, {d['ci95_points'][1]:+.2f}]" if d else "-"

    def best(e: dict, key: str) -> dict | None:  # the seed-paired interval (the study's verdict), else Welch's
        return e.get(f"{key}_vs_baseline_paired") or e.get(f"{key}_vs_baseline")

    paired = any("test_vs_baseline_paired" in e for e in [*res["rows"], *(res.get("arms") or {}).values()])
    how = "paired by training seed" if paired else "Welch interval"
    rows, pts = [], []
    for r in res["rows"]:
        t, v = r.get("test"), r.get("val")
        stats = ([pct(t["mean_pct"] / 100), pct(t["std_pct"] / 100), str(t["n"]),
                  ci_from_summary(t["mean_pct"] / 100, t["std_pct"] / 100, int(t["n"]))] if t else ["-"] * 4)
        rows.append([r["label"], r["kind"], num(r["energy_uj"], ".4g"), *stats,
                     f"{v['mean_pct']:.2f}% ± {v['std_pct']:.2f}" if v else "-",
                     diff(best(r, "val")), diff(best(r, "test")), r.get("baseline", "")])
        if t:
            pts.append((r, t))
    out = ""
    if pts:
        fig, ax = plt.subplots(figsize=(7.2, 4.4))
        style = {"uniform": ("k", "o", "uniform U-kx"), "aligned-uniform": ("#2ca02c", "D", "aligned-uniform"),
                 "search": ("#d62728", "*", "HAWIS searched")}
        seen = set()
        for r, t in sorted(pts, key=lambda p: p[0]["energy_uj"]):
            c, m, name = style.get(r["kind"], ("#1f77b4", "s", r["kind"]))
            ax.errorbar([r["energy_uj"]], [t["mean_pct"]], yerr=[t["std_pct"]], fmt=m, c=c, capsize=3, ms=7,
                        label=None if name in seen else f"{name} (mean ± std over seeds)")
            seen.add(name)
        uni = sorted((r["energy_uj"], t["mean_pct"]) for r, t in pts if r["kind"] == "uniform")
        if len(uni) > 1:
            ax.plot([e for e, _ in uni], [a for _, a in uni], "-", c="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("crossbar energy per inference (µJ)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        out += figure(fig, "searched vs aligned-uniform vs U-kx")
    out += table(["net", "kind", "energy (µJ)", *(f"test {h}" for h in STAT_HEADS), "held-out mean ± std",
                  "held-out - baseline, points [95 % CI]", "test - baseline [95 % CI]", "baseline"], rows,
                 f"each net trained from scratch per seed; baselines: its aligned-uniform net ({how})")
    arms = [[a, len(e.get("nets", [])), diff(best(e, "val")), diff(best(e, "test")),
             e.get("verdict_on_val", "-"), diff(e.get("val_vs_baseline_by_search")),
             diff(e.get("test_vs_baseline_by_search"))] for a, e in (res.get("arms") or {}).items()]
    if arms:
        out += table(["arm", "search seeds", "held-out - baseline [95 % CI]", "test - baseline [95 % CI]",
                      "verdict (on held-out)", "held-out, over search seeds [95 % CI]",
                      "test, over search seeds [95 % CI]"], arms,
                     "each search arm against its aligned-uniform baselines: the verdict's interval is over training "
                     "seeds with the searched nets held fixed; the last two are over the search seeds")
    d = res.get("design") or {}
    if d.get("detectable_points") is not None:
        out += (f"<p class='muted'>Design: {esc(d.get('planned_seeds_per_net'))} seeds per net, pooled seed std "
                f"{d['pooled_seed_std_points']:.2f} points: smallest detectable difference "
                f"{d['detectable_points']:.2f} points ({esc(d.get('test', ''))}).</p>")
    if d.get("detectable_points_paired") is not None:
        out += (f"<p class='muted'>Paired by training seed: std of the seed-matched differences "
                f"{d['paired_diff_std_points']:.2f} points: smallest detectable difference "
                f"{d['detectable_points_paired']:.2f} points ({esc(d.get('test_paired', ''))}).</p>")
    return out


def _uae_study(f: Folder) -> str:
    finals: dict[str, list[dict]] = {}
    for p in sorted(f.path.glob("seed*/*/final.json")):
        if re.fullmatch(r"seed\d+", p.parent.parent.name):
            obj = Folder(p.parent).json("final.json")
            if obj:
                finals.setdefault(p.parent.name, []).append(obj)
    out = ""
    if finals:
        rows = []
        for method, fs in finals.items():
            for key, name in (("clean_acc", "w/o noise"), ("mean", "MC mean"), ("p5", "95%-min (p5)")):
                vals = [x.get(key, x.get("p95")) if key == "p5" else x.get(key) for x in fs]
                vals = [v for v in vals if isinstance(v, int | float)]
                if vals:
                    rows.append([fs[0].get("label", method), name, *mean_std_ci(vals)])
        out += table(["method", "test accuracy", *STAT_HEADS], rows, "over seeds (one search + final evaluation "
                                                                     "per seed)")
    else:
        f.problem("no seed<k>/<method>/final.json: no search of the study has finished; its table is not shown")
    for name in ("table3.md", "search_stats.md"):
        text = f.text(name)
        if text:
            out += f"<h3>{esc(name)}</h3>" + markdown(text)
    return out


# ============================================================================ any other run
def generic_sections(page: Page, f: Folder, prefix: str = "") -> None:
    def results() -> str:
        rows = []
        for p in sorted(f.path.glob("*.json")):
            if p.name == "run.json":
                continue
            obj = f.json(p.name, object)
            if isinstance(obj, dict):
                rows += [[p.name, k, num(v, ".4g") if isinstance(v, float) else str(v)]
                         for k, v in obj.items() if isinstance(v, int | float | str)][:30]
        tables = "".join(f"<h3>{esc(p.name)}</h3>" + markdown(f.text(p.name) or "")
                         for p in sorted(f.path.glob("*.md")))
        facts = [[k, v] for k, v, _ in run_facts(f)]
        return (table(["", ""], facts) if facts else "") + (table(["file", "key", "value"], rows) if rows else "") \
            + tables
    page.build(prefix + f.kind_name, f, results)
    epochs = f.jsonl("metrics.jsonl")  # cimnas train: one record per epoch
    if epochs:
        page.build(prefix + "Training curves", f, lambda: _epochs(epochs))
    page.build(prefix + "Figures", f, lambda: folder_pngs(f, "", "figures"))
    page.build(prefix + "Config", f, lambda: config_section(f) + log_section(f))


def _epochs(epochs: list[dict]) -> str:
    """Loss and accuracies per epoch of a `cimnas train` run (metrics.jsonl)."""
    x = [r["epoch"] for r in epochs]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.1))
    axes[0].plot(x, [r["loss"] for r in epochs], ".-", c="#d62728")
    axes[0].set_ylabel("training loss")
    for key, name in (("train_acc", "training"), ("val_acc", "held-out")):
        if all(isinstance(r.get(key), int | float) for r in epochs):
            axes[1].plot(x, [100 * r[key] for r in epochs], ".-", label=name)
    axes[1].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    int_x(*axes)
    return figure(fig, "training curves")


# ============================================================================ several folders
def comparison_sections(page: Page, folders: list[Folder]) -> None:
    def side_by_side() -> str:
        facts = [dict((k, v) for k, v, _ in run_facts(f)) for f in folders]
        labels: list[str] = []
        for d in facts:
            labels += [k for k in d if k not in labels]
        return table(["", *(f.name for f in folders)], [[k, *(d.get(k, "") for d in facts)] for k in labels])
    page.build("Side by side", folders[0], side_by_side)
    hawis = [f for f in folders if f.kind == "hawis"]
    if len(hawis) > 1:
        page.build("HAWIS runs over seeds", hawis[0], lambda: _over_seeds(hawis))


def _over_seeds(runs: list[Folder]) -> str:
    """Every stage-C model label present in several runs: mean ± std over the runs (seeds), with error bars."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        for label, v in (r.json("stage_c.json") or {}).items():
            if isinstance(v, dict) and isinstance(v.get("test_accuracy"), int | float):
                by.setdefault("HAWIS searched" if label == "searched" else label, []).append(v)
    seeds = sorted({str((r.config() or {}).get("seed", "?")) for r in runs})
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = []
    for label, vs in sorted(by.items(), key=lambda kv: sum(v["energy_uj"] for v in kv[1]) / len(kv[1])):
        accs = [v["test_accuracy"] for v in vs]
        energy = sum(v["energy_uj"] for v in vs) / len(vs)
        s = summarize(accs)
        colour = "#1f77b4" if is_uniform(label) else "#2ca02c" if is_aligned(label) else "#d62728"
        ax.errorbar([energy], [100 * s["mean"]], yerr=[100 * s["std"]], fmt="o", c=colour, capsize=4)
        ax.annotate(f"{label} (n={s['n']})", (energy, 100 * s["mean"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
        rows.append([label, num(energy, ".4g"), *mean_std_ci(accs)])
    ax.set_xscale("log")
    ax.set_xlabel("crossbar energy per inference (µJ, mean over runs)")
    ax.set_ylabel("test accuracy (%), mean ± std over runs")
    ax.grid(alpha=0.3)
    return (figure(fig, "energy vs accuracy over seeds")
            + table(["model", "energy (µJ)", *(f"test {h}" for h in STAT_HEADS)], rows,
                    f"{len(runs)} runs (config seeds {', '.join(seeds)})"))

