"""Figure of UAE Fig. 3: histogram of one output-change element with its fitted Gaussian density."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def plot_output_change(values: torch.Tensor, mean: float, std: float, path: str | Path, *, bins: int = 100,
                       span: float = 4.0, title: str = "Output change", chi2: float | None = None) -> Path:
    """Save a PNG of the density histogram of `values` (S,) over mean +- span*std with the fitted
    N(mean, std) density on top (UAE Fig. 3). Returns the path."""
    import matplotlib  # lazy: matplotlib (+pyplot) costs 1.1-1.5 s to import, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = values.detach().double().cpu().numpy()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    if std > 0:
        lo, hi = mean - span * std, mean + span * std
        ax.hist(v.clip(lo, hi), bins=bins, range=(lo, hi), density=True, color="#8fb3d9",
                edgecolor="none", label=f"{len(v)} samples")
        xs = torch.linspace(lo, hi, 400, dtype=torch.float64)
        pdf = torch.exp(-0.5 * ((xs - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        ax.plot(xs.numpy(), pdf.numpy(), color="#c0392b", lw=1.5, label=f"N({mean:.2g}, {std:.2g}^2)")
    else:
        ax.axvline(mean, color="#c0392b", label="all samples equal")
    ax.set_xlabel("O_dep - O_ori")
    ax.set_ylabel("density")
    ax.set_title(title + (f"  (chi2 = {chi2:.3g})" if chi2 is not None else ""), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
