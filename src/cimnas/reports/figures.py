"""The end of every cimnas figure: labels, legend, layout, an atomic PNG write (a kill never leaves half a file)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cimnas.utils.io import atomic_write_bytes


def finish(fig: Any, ax: Any, path: str | Path, *, xlabel: str, ylabel: str, title: str | None = None,
           title_size: float | None = None, legend: bool = True, dpi: int = 120) -> Path:
    """Label `ax`, add its legend, lay out `fig`, write it to `path` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt  # lazy: matplotlib costs 1.1-1.5 s to import, figures only

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
