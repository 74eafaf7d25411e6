"""Stage C's trained nets as the reports show them: test accuracy over training seeds (mean ± std, n) and the
run's one-sentence verdict (final.json `seed_comparison`, cimnas.pipelines.hawis.seeds). Reads run-folder dicts
only. Test accuracies of trained nets are drawn on their own axis, never beside the search's proxy accuracies."""

from __future__ import annotations

from typing import Any

import numpy as np


def _label(k: str) -> str:
    return "HAWIS (searched)" if k == "searched" else k


def trained_points(stage_c: dict) -> list[tuple[str, float, float, float, int]]:
    """(label, energy_uj, mean test acc. %, std %, n) of every trained binary net, by energy; one seed: std 0."""
    out = []
    for k, v in stage_c.items():
        if not isinstance(v, dict) or v.get("energy_uj") is None or v.get("test_accuracy") is None:
            continue
        accs = (v.get("seed_runs") or {}).get("test_accuracy") or [v["test_accuracy"]]
        a = 100 * np.asarray(accs, dtype=float)
        out.append((k, float(v["energy_uj"]), float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0,
                    int(a.size)))
    return sorted(out, key=lambda p: p[1])


def test_panel(ax: Any, stage_c: dict) -> None:
    """Test accuracy (mean ± std over training seeds) of every stage-C net against its energy, on `ax`."""
    colours = {"searched": "#d62728"}
    for k, e, m, sd, n in trained_points(stage_c):
        kind = "U" if k.startswith("U-") else "AU" if k.startswith("AU-") else k
        c = colours.get(k, {"U": "#1f77b4", "AU": "#2ca02c"}.get(kind, "#e07000"))
        marker = {"searched": "*", "U": "s", "AU": "D"}.get(kind, "^")
        ax.errorbar([e], [m], yerr=[sd], fmt=marker, c=c, ms=12 if k == "searched" else 6, capsize=3)
        ax.annotate(f"{_label(k)} (n={n})", (e, m), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)


def accuracy_panels(plt: Any, eps: list, pareto: list, stage_c: dict, final: dict, xlabel: str) -> Any:
    """The energy-vs-accuracy figure of a run, in two panels that never share an accuracy axis: left, the search's
    proxy (super-net, held-out) accuracy of every candidate and its Pareto front; right, `test_panel` (untrained
    U-kx as dotted energy markers). Returns the figure (the caller writes it)."""
    fig, (proxy, test) = plt.subplots(1, 2, figsize=(10.5, 4.4), sharex=True)
    if eps:
        proxy.scatter([e["energy_uj"] for e in eps], [100 * e["accuracy"] for e in eps], s=12, c="0.6",
                      label="searched candidates")
    if pareto:
        proxy.plot([e["energy_uj"] for e in pareto], [100 * e["accuracy"] for e in pareto], "-o", c="#e0a000",
                   ms=4, label="Pareto front")
    proxy.set_xscale("log")
    proxy.grid(alpha=0.3)
    if proxy.get_legend_handles_labels()[0]:
        proxy.legend(fontsize=7, loc="lower right")
    proxy.set_title("search (proxy accuracy)", fontsize=9)
    proxy.set_ylabel("proxy accuracy (%): super-net, held-out")
    test_panel(test, stage_c)
    for k, e in (final.get("uniform_energy_uj") or {}).items():
        if k not in stage_c:
            test.axvline(e, color="#1f77b4", lw=0.6, ls=":")
            test.annotate(f"{k} (not trained)", (e, 0.02), xycoords=("data", "axes fraction"), fontsize=7,
                          rotation=90, color="#1f77b4")
    test.set_title("stage C (test accuracy, mean ± std over seeds)", fontsize=9)
    test.set_ylabel("test accuracy (%): trained in stage C")
    for ax in (proxy, test):
        ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def seeds_markdown(stage_c: dict, final: dict) -> str:
    """table.md's section: every trained net's test / validation accuracy over its seeds, and the verdict."""
    pts = trained_points(stage_c)
    if not any(n > 1 for *_, n in pts) and not final.get("seed_comparison"):
        return ""
    lines = ["", "Training seeds (stage C): mean ± std over seeds 0..n-1; validation = held-out search_eval.", "",
             "| Model | Energy (uJ) | n | Test acc. (%) | Val. acc. (%) |", "|---|---|---|---|---|"]
    for k, e, m, sd, n in pts:
        val = 100 * np.asarray((stage_c[k].get("seed_runs") or {}).get("val_accuracy")
                               or [stage_c[k].get("val_accuracy", float("nan"))], dtype=float)
        vsd = f" ± {val.std(ddof=1):.2f}" if val.size > 1 else ""
        lines.append(f"| {_label(k)} | {e:.4g} | {n} | {m:.2f} ± {sd:.2f} | {val.mean():.2f}{vsd} |")
    sc = final.get("seed_comparison")
    if sc:
        lines += ["", sc["sentence"]]
        for r in sc.get("differences", []):
            if "detectable" in r:
                lines.append(f"(vs {r['baseline']}: this design detects a true difference of about "
                             f"{r['detectable']:.2f} points with 80 % power.)")
    return "\n".join(lines) + "\n"
