"""Accuracy over time since programming, one curve per model (and per drift-compensation setting), with a band
from the lowest to the highest trial (reads the JSON of `cimnas robustness --time`)."""

from __future__ import annotations

from pathlib import Path

from cimnas.reports.figures import finish


def plot_over_time(result: dict, path: str | Path, title: str | None = None) -> Path:
    """PNG of accuracy vs time; time 0 is drawn at 1 s on the log axis (labelled with the given time strings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["times"]
    x = [max(r["time_s"], 1.0) for r in rows]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for label in rows[0]["models"]:
        for setting in rows[0]["models"][label]:
            res = [r["models"][label][setting] for r in rows]
            m = [100 * v["mean"] for v in res]
            name = label if len(rows[0]["models"][label]) == 1 else f"{label} ({setting})"
            line, = ax.plot(x, m, marker="o", ms=3, ls="-" if setting == "uncompensated" else "--", label=name)
            ax.fill_between(x, [100 * v["min"] for v in res], [100 * v["max"] for v in res], color=line.get_color(),
                            alpha=0.15)
    ax.set_xscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([r["time"] for r in rows])
    ax.grid(alpha=0.3)
    return finish(fig, ax, path, xlabel="time since programming", ylabel="test accuracy (%) (band: min..max)",
                  title=title)
