"""The HTML report's sections for one HAWIS run and one UAE search run (reads the run folder's files only).

HAWIS (cimnas.pipelines.hawis: episodes.jsonl, pareto.json, best_arch.json, stage_c.json, final.json):
what it found, energy vs accuracy with the U-kx (and aligned-uniform, when trained) baselines, the search
curves, per-layer widths and crossbar fill, the energy per component and per layer, robustness with bands, the
config. UAE (cimnas.pipelines.uae: episodes.jsonl, best_arch.json, final.json): reward curves, clean vs noisy
accuracy of every child, the final Monte-Carlo evaluation, the config.
"""

from __future__ import annotations

from itertools import accumulate

from cimnas.reports.folder import Folder
from cimnas.reports.hawis_seeds import accuracy_panels
from cimnas.reports.html import STAT_HEADS, Page, esc, figure, int_x, key_numbers, mean_std_ci, num, pct, plt, table
from cimnas.reports.summary import is_aligned, run_facts

BLUE, ORANGE, RED, GREEN, GREY = "#1f77b4", "#e0a000", "#d62728", "#2ca02c", "0.6"


# ============================================================================ shared
def facts_section(f: Folder) -> str:
    facts = run_facts(f)
    big = [(k, v) for k, v, main in facts if main]
    rest = [(k, v) for k, v, main in facts if not main]
    return key_numbers(big) + (table(["quantity", "value"], rest) if rest else "")


def config_section(f: Folder) -> str:
    text = f.text("config.yaml")
    if text is None:
        f.problem("no config.yaml: the resolved config is not shown")
        return ""
    return f"<details open><summary class='muted'>config.yaml (resolved)</summary><pre>{esc(text)}</pre></details>"


def log_section(f: Folder, lines: int = 15) -> str:
    text = f.text("run.log")
    if not text:
        return ""
    tail = text.splitlines()[-lines:]
    return f"<p class='muted'>last {len(tail)} lines of run.log</p><pre>{esc(chr(10).join(tail))}</pre>"


# ============================================================================ HAWIS
def hawis_sections(page: Page, f: Folder, prefix: str = "") -> None:
    eps = f.jsonl("episodes.jsonl")
    final = f.json("final.json") or {}
    stage_c = f.json("stage_c.json") or {}
    pareto = f.json("pareto.json", list) or []
    if not eps:
        f.problem("no episodes.jsonl records: the search curves are not shown (stage B has not run yet)")
    if not final:
        f.problem("no final.json: stage C has not finished, so there is no retrained model, energy breakdown or "
                  "robustness to show")
    page.build(prefix + "What the run found", f, lambda: facts_section(f))
    page.build(prefix + "Energy vs accuracy", f, lambda: _pareto(f, eps, pareto, stage_c, final))
    if eps:
        page.build(prefix + "Search curves", f, lambda: _curves(eps))
    if final:
        page.build(prefix + "Per-layer widths and crossbar fill", f, lambda: _widths(f, final, stage_c))
        page.build(prefix + "Energy per component and per layer", f, lambda: _energy(f, final))
    page.build(prefix + "Robustness", f, lambda: _robustness(f, final, stage_c))
    page.build(prefix + "Seed spread", f, lambda: stage_c_seeds(stage_c, final) + seed_spreads(f))
    page.build(prefix + "Config", f, lambda: config_section(f) + log_section(f))


def baseline_rows(stage_c: dict, final: dict) -> list[list[str]]:
    """Every stage-C model (test / held-out accuracy, energy, crossbars) and the untrained U-kx energies."""
    rows = []
    for label, v in sorted(stage_c.items(), key=lambda kv: kv[1].get("energy_uj") or 0.0):
        runs = v.get("seed_runs") or {}
        test = (f"{pct(runs['test_accuracy'][0])} (seed 0)" if isinstance(runs.get("test_accuracy"), list)
                else pct(v.get("test_accuracy")))
        rows.append([label, num(v.get("energy_uj"), ".4g"), test, pct(v.get("val_accuracy")),
                     num(v.get("crossbars"), "d"), " ".join(map(str, v.get("widths") or []))])
    for label, e in (final.get("uniform_energy_uj") or {}).items():
        if label not in stage_c:
            rows.append([f"{label} (not trained)", num(e, ".4g"), "-", "-", "-", ""])
    return rows


def _pareto(f: Folder, eps: list, pareto: list, stage_c: dict, final: dict) -> str:
    if not (eps or stage_c or final):
        return ""  # nothing measured yet (the missing files are already noted)
    fig = accuracy_panels(plt, eps, pareto, stage_c, final, "crossbar energy per inference (µJ)")
    seeded = max((len((v.get("seed_runs") or {}).get("test_accuracy") or [1]) for v in stage_c.values()), default=1)
    notes = ["Proxy and test accuracies are on separate axes: the search ranks candidates by the super-net's "
             "held-out accuracy, stage C trains the chosen nets from scratch and reads the test split once each."]
    notes.append(f"Error bars: std over {seeded} training seeds (seed 0, 1, ...)." if seeded > 1 else
                 "One seed per model in a single run: no seed error bars here; set retrain.seeds, or give "
                 "`cimnas report` several runs of one config (different seeds) for mean ± std over seeds.")
    if not any(is_aligned(k) for k in stage_c):
        notes.append("No aligned-uniform baseline in this run (stage_c.json holds none): not shown.")
    if any(k not in stage_c for k in final.get("uniform_energy_uj") or {}):
        notes.append("Dotted lines: energy of the U-kx widths that were not trained in stage C.")
    rows = baseline_rows(stage_c, final)
    return (figure(fig, "energy vs accuracy") + "".join(f"<p class='muted'>{esc(n)}</p>" for n in notes)
            + (table(["model", "energy (µJ)", "test acc.", "held-out acc.", "crossbars", "widths"], rows,
                     "stage C models (trained from scratch; test accuracy read once per model)") if rows else ""))


def _curves(eps: list) -> str:
    x = [e["episode"] for e in eps]
    best = list(accumulate((e["reward"] for e in eps), max))
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.1))
    axes[0].plot(x, [e["reward"] for e in eps], ".-", lw=0.7, c=ORANGE, label="reward")
    axes[0].plot(x, best, c=RED, lw=1.2, label="best so far")
    axes[0].legend(fontsize=7, loc="lower right")
    axes[1].plot(x, [100 * e["accuracy"] for e in eps], ".-", lw=0.7, c=BLUE)
    axes[2].plot(x, [e["energy_uj"] for e in eps], ".-", lw=0.7, c=GREEN)
    for ax, lab in zip(axes, ("reward (Eq. 5)", "held-out accuracy (%)", "energy (µJ)"), strict=True):
        ax.set_xlabel("episode")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    int_x(*axes)
    return figure(fig, "search curves") + f"<p class='muted'>{len(eps)} episodes; best reward {max(best):+.4f}.</p>"


def _widths(f: Folder, final: dict, stage_c: dict) -> str:
    widths = final.get("widths") or []
    if not widths:
        f.problem("final.json records no widths: the per-layer widths are not shown")
        return ""
    cfg = f.config() or {}
    k = float((cfg.get("report") or {}).get("compare_uniform", 1.0))
    uni = (final.get("uniform_widths") or {}).get(f"U-{k:g}x")
    aligned = sorted(((lab, v["widths"]) for lab, v in stage_c.items() if is_aligned(lab) and v.get("widths")),
                     key=lambda kv: kv[0])
    layers = (final.get("energy_detail") or {}).get("layers") or []
    x = list(range(1, len(widths) + 1))
    series = ([(f"U-{k:g}x", uni, BLUE)] if uni and len(uni) == len(widths) else []) + [("HAWIS", widths, ORANGE)]
    series += [(lab, w, GREEN) for lab, w in aligned[:1] if len(w) == len(widths)]
    fig, axes = plt.subplots(2 if layers else 1, 1, figsize=(9, 5.4 if layers else 3.2), squeeze=False)
    bw = 0.8 / len(series)
    for i, (lab, w, c) in enumerate(series):
        axes[0][0].bar([j - 0.4 + bw * (i + 0.5) for j in x], w, width=bw, color=c, label=lab)
    axes[0][0].set_ylabel("output channels")
    axes[0][0].set_xlabel("searchable layer")
    axes[0][0].legend(fontsize=7, loc="upper left")
    if layers:  # every crossbar-mapped layer (the searchable ones, shortcuts, the classifier)
        axes[1][0].bar(range(1, len(layers) + 1), [100 * (r.get("utilization") or 0) for r in layers], color=ORANGE)
        axes[1][0].set_ylabel("crossbar fill (%)")
        axes[1][0].set_ylim(0, 100)
        axes[1][0].set_xlabel("crossbar-mapped layer (table in the energy section)")
    else:
        f.problem("final.json records no per-layer crossbar fill (energy_detail, written by stage C of this "
                  "version): the fill panel is not shown")
    int_x(*(a[0] for a in axes))
    heads = ["layer", "HAWIS width"] + [lab for lab, _, _ in series if lab != "HAWIS"]
    rows = [[i + 1, widths[i]] + [w[i] for lab, w, _ in series if lab != "HAWIS"] for i in range(len(widths))]
    notes = "" if aligned else "<p class='muted'>No aligned-uniform baseline in this run: not shown.</p>"
    return figure(fig, "per-layer widths") + notes + table(heads, rows)


def _energy(f: Folder, final: dict) -> str:
    detail = final.get("energy_detail")
    if not detail:
        f.problem("final.json records no energy breakdown (energy_detail, written by stage C of this version): "
                  "the energy per component and per layer is not shown")
        return ""
    comp = detail["components_uj"]
    layers = detail["layers"]
    names = list(comp)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1, 2.4]})
    axes[0].bar(names, [comp[c] for c in names], color=BLUE)
    axes[0].set_ylabel("energy (µJ)")
    axes[0].set_title("per component", fontsize=9)
    bottom = [0.0] * len(layers)
    x = list(range(1, len(layers) + 1))
    for i, c in enumerate(names):
        vals = [r["energy_pj"].get(c, 0.0) * 1e-6 for r in layers]
        axes[1].bar(x, vals, bottom=bottom, color=f"C{i}", label=c)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel("energy (µJ)")
    axes[1].set_title("per layer", fontsize=9)
    axes[1].legend(fontsize=7, ncol=len(names), loc="upper left")
    int_x(axes[1])
    total = sum(comp.values())
    rows = [[c, num(comp[c], ".4g"), pct(comp[c] / total if total else None, 1)] for c in names]
    lay = [[f"{i + 1} {r.get('name', '')}", r.get("out_channels", "-"), num(r.get("crossbars"), "d"),
            pct(r.get("utilization"), 1), num(r["energy_uj"], ".4g"), pct(r["energy_uj"] / total if total else None, 1)]
           for i, r in enumerate(layers)]
    return (figure(fig, "energy breakdown") + table(["component", "energy (µJ)", "share"], rows, "whole network")
            + table(["layer", "out channels", "crossbars", "crossbar fill", "energy (µJ)", "share"], lay,
                    "per crossbar-mapped layer (fill: used / allocated cells)"))


def _robustness(f: Folder, final: dict, stage_c: dict) -> str:
    models = [("HAWIS final", final)] if final.get("robustness") else []
    models += [(k, v) for k, v in stage_c.items() if k != "searched" and v.get("robustness")]
    sweep = f.json("robustness.json")
    if not models and not (sweep and isinstance(sweep.get("kinds"), dict)):
        if final:
            f.problem("no Monte-Carlo robustness recorded (defects.trials = 0 or retrain.robustness off): the "
                      "robustness section is not shown")
        return ""
    out = ""
    if models:
        fig, ax = plt.subplots(figsize=(7, 0.9 + 0.55 * len(models)))
        for i, (_lab, v) in enumerate(models):
            r = v["robustness"]
            ax.plot([100 * r["min"], 100 * r["max"]], [i, i], c=GREY, lw=1)
            ax.barh(i, 200 * r["std"], left=100 * (r["mean"] - r["std"]), height=0.4, color=ORANGE, alpha=0.5)
            ax.plot(100 * r["mean"], i, "o", c=RED)
            ax.plot(100 * r["p5"], i, "|", c="k", ms=12)
            if v.get("test_accuracy") is not None:
                ax.plot(100 * v["test_accuracy"], i, "*", c=BLUE, ms=10)
        ax.set_yticks(range(len(models)), [m[0] for m in models])
        ax.set_xlabel("test accuracy under defects (%): band mean ± std, line min-max, | p5, ★ no defects")
        ax.grid(alpha=0.3)
        r0 = models[0][1]["robustness"]
        rows = [[lab, pct(v.get("test_accuracy")), pct(v["robustness"]["mean"]), pct(v["robustness"]["std"]),
                 v["robustness"].get("trials", "-"), pct(v["robustness"]["p5"]), pct(v["robustness"]["min"]),
                 pct(v["robustness"]["max"])] for lab, v in models]
        out += (figure(fig, "robustness") + table(["model", "no defects", "mean", "std", "n (trials)", "p5", "min",
                                                   "max"], rows)
                + f"<p class='muted'>defects: SA0 rate {esc(r0.get('sa0_rate'))}, SA1 rate {esc(r0.get('sa1_rate'))},"
                  f" variation sigma {esc(r0.get('variation_sigma', r0.get('sigma')))}.</p>")
    if sweep and isinstance(sweep.get("kinds"), dict):
        out += _sweep(sweep)
    return out


def _sweep(sweep: dict) -> str:
    """A `cimnas hardware robustness` sweep (robustness.json): accuracy vs defect level, mean ± std band."""
    kinds = list(sweep["kinds"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.3), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for label, rows in sweep["kinds"][kind]["models"].items():
            x = [r["level"] for r in rows]
            m = [100 * r["mean"] for r in rows]
            s = [100 * r["std"] for r in rows]
            line, = ax.plot(x, m, "o-", ms=3, label=label)
            ax.fill_between(x, [a - b for a, b in zip(m, s, strict=True)], [a + b for a, b in zip(m, s, strict=True)],
                            color=line.get_color(), alpha=0.2)
        ax.set_xlabel(f"{kind} level")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return "<h3>robustness.json sweep</h3>" + figure(fig, "robustness sweep")


# ============================================================================ UAE
def uae_sections(page: Page, f: Folder, prefix: str = "") -> None:
    log = f.jsonl("episodes.jsonl")
    final = f.json("final.json") or {}
    if not log:
        f.problem("no episodes.jsonl records: the reward curves are not shown (the search has not run yet)")
    if not final:
        f.problem("no final.json: the final Monte-Carlo evaluation has not run; not shown")
    page.build(prefix + "What the run found", f, lambda: facts_section(f))
    if log:
        page.build(prefix + "Reward curves", f, lambda: _rewards(log))
        page.build(prefix + "Children: clean vs noisy accuracy", f, lambda: _children(log, final))
    if final:
        page.build(prefix + "Final evaluation", f, lambda: _uae_final(final))
    page.build(prefix + "Config", f, lambda: config_section(f) + log_section(f))


def _rewards(log: list) -> str:
    ep = [r["episode"] for r in log]
    best = list(accumulate((r["reward"] for r in log), max))
    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    fresh = [r for r in log if not r.get("cache_hit")]
    hits = [r for r in log if r.get("cache_hit")]
    ax.scatter([r["episode"] for r in fresh], [r["reward"] for r in fresh], s=14, c=BLUE, label="trained child")
    if hits:
        ax.scatter([r["episode"] for r in hits], [r["reward"] for r in hits], s=14, facecolors="none",
                   edgecolors=BLUE, label="cache hit (no training)")
    ax.plot(ep, best, c=RED, label="best so far")
    int_x(ax)
    ax.set_xlabel("episode")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return figure(fig, "reward curves") + (f"<p class='muted'>{len(log)} episodes, {len(fresh)} children trained, "
                                           f"{len(hits)} cache hits; best reward {max(best):.4f}.</p>")


def _children(log: list, final: dict) -> str:
    fresh = [r for r in log if not r.get("cache_hit")]
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    clean = [100 * r["clean_acc"] for r in fresh]
    noisy = [100 * r["noisy"].get("mean", r["clean_acc"]) for r in fresh]
    err = [100 * r["noisy"].get("std", 0.0) for r in fresh]
    ax.errorbar(clean, noisy, yerr=err, fmt="o", ms=4, c=BLUE, ecolor="0.7", label="child: mean ± std over K")
    chosen = [r for r in fresh if r.get("arch_key") == final.get("arch_key")]
    if chosen:
        ax.plot(100 * chosen[0]["clean_acc"], 100 * chosen[0]["noisy"].get("mean", 0.0), "*", c=RED, ms=14,
                label="chosen child")
    ax.plot([0, 100], [0, 100], c="grey", lw=0.8, ls="--")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("accuracy under noise (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    top = sorted(fresh, key=lambda r: -r["reward"])[:10]
    rows = [[r["episode"], r["arch_key"], f"{r['reward']:.4f}", pct(r["clean_acc"]), pct(r["noisy"].get("mean")),
             pct(r["noisy"].get("std")), r["noisy"].get("n", "-"), num(r.get("energy_uj"), ".4g")] for r in top]
    return figure(fig, "clean vs noisy") + table(["episode", "child", "reward", "clean", "noisy mean", "noisy std",
                                                  "K", "energy (µJ)"], rows, "the 10 children of highest reward")


def _uae_final(final: dict) -> str:
    rows = [["method", final.get("label", "-")], ["K, statistic", f"{final.get('k')}, {final.get('statistic')}"],
            ["noise", f"sigma {final.get('gaussian_sigma', final.get('sigma'))} "
                      f"({final.get('gaussian_mode', final.get('noise_mode'))})"],
            ["accuracy without noise", pct(final.get("clean_acc"))],
            ["Monte-Carlo mean ± std", f"{pct(final.get('mean'))} ± {pct(final.get('std'))}"],
            ["95%-minimum (p5)", pct(final.get("p5", final.get("p95")))],
            ["min / median / max", f"{pct(final.get('min'))} / {pct(final.get('median'))} / {pct(final.get('max'))}"],
            ["noise samples (n)", final.get("mc_samples", "-")], ["energy", num(final.get("energy_uj"), ".4g", "µJ")],
            ["search time", num(final.get("search_time_h"), ".3f", "h")],
            ["episodes (unique children)", f"{final.get('episodes')} ({final.get('unique_children')})"],
            ["stop reason", final.get("stop_reason", "-")], ["child", final.get("arch_key", "-")]]
    return table(["", "final evaluation"], rows)


def stage_c_seeds(stage_c: dict, final: dict) -> str:
    """Each stage-C model trained with several seeds (`retrain.seeds`): test and held-out accuracy as mean, std, n
    and interval; the run's verdict (final.json seed_comparison) and its Welch intervals."""
    rows = []
    for label, v in stage_c.items():
        runs = v.get("seed_runs") if isinstance(v, dict) else None
        for key, name in (("test_accuracy", "test"), ("val_accuracy", "held-out")):
            vals = [x for x in ((runs or {}).get(key) or []) if isinstance(x, int | float)]
            if vals:
                rows.append([label, name, *mean_std_ci(vals)])
    out = table(["model", "accuracy", *STAT_HEADS], rows, "stage C over training seeds 0..n-1 (retrain.seeds)") \
        if rows else ""
    sc = final.get("seed_comparison") if isinstance(final.get("seed_comparison"), dict) else None
    if sc and isinstance(sc.get("sentence"), str):
        diffs = [[r.get("baseline", "-"), num((r.get("test") or {}).get("diff"), "+.2f"),
                  f"[{num((r.get('test') or {}).get('low'), '+.2f')}, "
                  f"{num((r.get('test') or {}).get('high'), '+.2f')}]",
                  num(r.get("detectable"), ".2f"), r.get("verdict", "-")] for r in sc.get("differences") or []
                 if isinstance(r, dict)]
        out += f"<p><b>{esc(sc['sentence'])}</b></p>" + table(
            ["searched minus", "test diff. (points)", "95 % Welch interval", "detectable (80 % power)", "verdict"],
            diffs, "the difference exceeds the seed spread when its interval excludes 0")
    return out


def seed_spreads(f: Folder) -> str:
    """`hawis_study spread` results in the folder (`spread*.json`: one U-kx trained with n seeds): test and held-out
    accuracy as mean, std, n and interval."""
    rows = []
    for p in sorted(f.path.glob("spread*.json")):
        res = f.json(p.name)
        if not res or not isinstance(res.get("accuracies"), dict) or len(res["accuracies"]) == 0:
            continue
        for key, name in (("accuracies", "test"), ("val_accuracies", "held-out")):
            vals = [v for v in (res.get(key) or {}).values() if isinstance(v, int | float)]
            if vals:
                rows.append([p.name, name, *mean_std_ci(vals)])
    return table(["spread file", "accuracy", *STAT_HEADS], rows, "stage-C seed spread: one U-kx trained with n "
                 "seeds (`hawis_study spread`)") if rows else ""
