"""The end of every cimnas figure: labels, legend, layout, an atomic PNG write (a kill never leaves half a file)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cimnas.utils.io import atomic_write_bytes


def readable_axes(ax: Any, *, integer_x: bool = False) -> None:
    """Plain tick labels on log axes (0.6, 2, 10 rather than 6x10^-1, major and minor ticks alike) and, with
    `integer_x`, whole-number x ticks only (episodes, epochs)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(plain)
            lo, hi = sorted(ax.get_xlim() if axis is ax.xaxis else ax.get_ylim())
            if hi / max(lo, 1e-300) < 100:  # less than two decades: label the 2 and 5 minor ticks too
                axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                axis.set_minor_formatter(plain)
            else:
                axis.set_minor_formatter(NullFormatter())
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def finish(fig: Any, ax: Any, path: str | Path, *, xlabel: str, ylabel: str, title: str | None = None,
           title_size: float | None = None, legend: bool = True, dpi: int = 120) -> Path:
    """Label `ax`, add its legend, lay out `fig`, write it to `path` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt  # lazy: matplotlib costs 1.1-1.5 s to import, figures only

    readable_axes(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=title_size)
    if legend:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
