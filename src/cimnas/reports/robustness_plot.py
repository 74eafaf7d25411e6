"""HAWIS Fig.-3-style robustness plot: accuracy vs defect level, mean +- std band, one curve per model."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cimnas.hardware.defects import SA0_RATE_PAPER, SA1_RATE_PAPER  # noqa: E402
from cimnas.utils.io import atomic_write_bytes  # noqa: E402

_XLABEL = {"sa0": "SA0 rate (%)", "sa1": "SA1 rate (%)", "variation": "variation sigma",
           "gaussian": "Gaussian noise sigma"}
#: the paper's region of interest (HAWIS Fig. 3 blue shadow), in the sweep's own units
_ROI = {"sa0": SA0_RATE_PAPER, "sa1": SA1_RATE_PAPER}


def plot_robustness(sweep: dict, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG with one panel per defect kind of a `robustness_sweep` result."""
    kinds = list(sweep["kinds"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        block = sweep["kinds"][kind]
        pct = kind in ("sa0", "sa1")
        for label, rows in block["models"].items():
            x = [r["level"] * (100 if pct else 1) for r in rows]
            m = [100 * r["mean"] for r in rows]
            s = [100 * r["std"] for r in rows]
            line, = ax.plot(x, m, marker="o", ms=3, label=f"{label} (mean)")
            ax.fill_between(x, [a - b for a, b in zip(m, s, strict=True)], [a + b for a, b in zip(m, s, strict=True)],
                            color=line.get_color(), alpha=0.2, label=f"{label} +- 1 std over trials")
        if kind in _ROI:
            ax.axvspan(0, _ROI[kind] * 100, color="tab:blue", alpha=0.08,
                       label="HAWIS region of interest (fabricated SA rates)")
        ax.set_xlabel(_XLABEL.get(kind, kind))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title or f"accuracy under device defects ({sweep.get('trials', '?')} trials, mean +- std)",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
