"""`cimnas report RUN_OR_STUDY... --html OUT.html`: one self-contained page per run, study or set of runs.

The page carries everything inside it, so it opens from an e-mail attachment with no network: the styles are one
inline <style> block, every figure is an inline base64 PNG (`data:` URI, drawn with matplotlib's Agg backend from
the folders' JSON / JSONL files, or an existing PNG of the folder read as bytes), and nothing points outside the
file (no http(s) link, no script, no file reference; tests/test_report_html.py checks it).

Sections by kind (html_runs.py, html_studies.py): a HAWIS run, a UAE search run, a headroom / HAWIS / UAE study,
any other run (its results, tables and figures); with several folders first a side-by-side comparison. What cannot
be shown (a folder that is not a run, a run still being written, a torn or corrupt log, a missing figure source)
is one line in the page's "Not shown" box and one line on stderr; the rest of the page is written. The folders
are only read (reports/folder.py), never changed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cimnas.errors import CimnasError  # noqa: E402
from cimnas.reports.folder import Folder, open_folder  # noqa: E402
from cimnas.stats import mean_ci, summarize  # noqa: E402
from cimnas.utils.io import atomic_write_bytes, read_regular  # noqa: E402
from cimnas.utils.units import pct_or_dash  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 4 << 20  # an existing figure larger than this is not inlined (the page stays mailable)
#: what a section may raise on a record missing a field (an edited or foreign file): a noted problem, not a crash
SECTION_ERRORS = (CimnasError, KeyError, TypeError, ValueError, IndexError, AttributeError, OSError,
                  ZeroDivisionError)

STYLE = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1060px;padding:18px;
color:#1d2330;background:#fff;line-height:1.4}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;border-bottom:2px solid #d9dee8;padding-bottom:3px;margin-top:1.6em}
h3{font-size:1.02em;margin:1.1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.86em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #cfd6e2;padding:3px 8px;text-align:right;vertical-align:top}td{white-space:nowrap}
th{background:#eef2f8}td:first-child,th:first-child{text-align:left}
.key{display:flex;flex-wrap:wrap;gap:10px;margin:.6em 0}
.key div{border:1px solid #cfd6e2;border-radius:6px;padding:6px 12px;background:#f7f9fc;min-width:120px}
.key b{display:block;font-size:1.25em}.key span{font-size:.78em;color:#555}
.notes{border-left:4px solid #d08a00;background:#fff7e6;padding:6px 12px;margin:.8em 0;font-size:.9em}
.notes li{margin:.15em 0}.muted{color:#666;font-size:.86em}
img{max-width:100%;height:auto;display:block;margin:.4em 0}
pre{background:#f4f6fa;border:1px solid #dde3ec;padding:8px;font-size:.78em;overflow-x:auto;max-height:420px}
nav a{margin-right:12px;font-size:.88em;color:#1f5fa8}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(v: Any, digits: int = 2) -> str:
    """An accuracy (0..1) as a percentage, '-' when absent (`utils.units`: one convention with the logs)."""
    return pct_or_dash(v, digits)


def num(v: Any, fmt: str = ".4g", unit: str = "") -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-"
    return f"{v:{fmt}}" + (f" {unit}" if unit else "")


def mean_std_ci(values: list[float]) -> list[str]:
    """[mean, std, n, 95 % interval] of accuracies (0..1) as percentage strings."""
    s = summarize(values)
    _, lo, hi = mean_ci(values)
    ci = f"[{100 * lo:.2f}, {100 * hi:.2f}]" if s["n"] > 1 else "(n = 1, no interval)"
    return [pct(s["mean"]), pct(s["std"]), str(s["n"]), ci]


def ci_from_summary(mean: float, std: float, n: int) -> str:
    """The 95 % t interval of a mean from its (mean, std, n) (a Monte-Carlo summary keeps no values)."""
    if n < 2:
        return "(n = 1, no interval)"
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return f"[{100 * (mean - half):.2f}, {100 * (mean + half):.2f}]"


STAT_HEADS = ["mean", "std", "n", "95 % CI of the mean"]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> str:
    """An HTML table (cells escaped)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption class='muted'>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_numbers(items: Sequence[tuple[str, str]]) -> str:
    """The large numbers at the top of a section: (label, value)."""
    return "<div class='key'>" + "".join(f"<div><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in items) + \
        "</div>"


def markdown(text: str) -> str:
    """The markdown a run or study writes (pipe tables, paragraphs, list items) as HTML; anything else verbatim."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            body = [c for c in cells[1:] if not all(set(x) <= set("-: ") for x in c)]
            out.append(table(cells[0], body))
            rows.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            rows.append(line)
            continue
        flush()
        s = line.strip()
        if s.startswith("#"):
            out.append(f"<h3>{esc(s.lstrip('#').strip())}</h3>")
        elif s:
            out.append(f"<p class='muted'>{esc(s)}</p>")
    flush()
    return "\n".join(out)


def int_x(*axes: Any) -> None:
    """Whole-number ticks on the x axis (episodes, epochs, layers)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(fig: Any, alt: str) -> str:
    """A matplotlib figure as an inline PNG <img> (closed afterwards; no metadata naming a web site)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return f"<img alt='{esc(alt)}' src='{png_uri(buf.getvalue())}'>"


def png_file(folder: Folder, rel: str) -> str:
    """An existing PNG of the folder inlined; a missing, oversized or non-PNG file is a noted problem."""
    path = folder.path / rel
    try:
        size = path.stat().st_size
        if size > MAX_PNG_BYTES:
            folder.problem(f"{rel} is {size >> 20} MiB; not inlined (the page stays small enough to send)")
            return ""
        data = read_regular(path)  # never through a link, a FIFO or a device (cimnas.utils.io)
    except (CimnasError, OSError) as e:
        folder.problem(f"figure {rel} could not be read ({getattr(e, 'strerror', None) or e}); not shown")
        return ""
    if not data.startswith(PNG_MAGIC):
        folder.problem(f"figure {rel} is not a PNG file; not shown")
        return ""
    return f"<h3>{esc(rel)}</h3><img alt='{esc(rel)}' src='{png_uri(data)}'>"


def folder_pngs(folder: Folder, *subdirs: str) -> str:
    """Every PNG directly in `subdirs` of the folder ('' = the folder itself), inlined in name order."""
    parts = []
    for sub in subdirs:
        d = folder.path / sub if sub else folder.path
        if d.is_dir():
            for p in sorted(d.glob("*.png")):
                if p.is_file() and not p.is_symlink() and not p.name.startswith("."):
                    parts.append(png_file(folder, str(p.relative_to(folder.path))))
    return "".join(parts)


class Page:
    """The page being built: sections in order and the 'Not shown' lines."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[tuple[str, str, str]] = []  # (anchor, heading, body html)
        self.problems: list[str] = []
        self.shown = 0  # folders that are runs or studies (the others are only noted)

    def add(self, heading: str, body: str) -> None:
        if body:
            self.sections.append((f"s{len(self.sections)}", heading, body))

    def build(self, heading: str, folder: Folder, fn: Callable[[], str]) -> None:
        """Add section `heading` made by `fn`; an error inside it becomes a noted problem, not a crash."""
        try:
            body = fn()
        except SECTION_ERRORS as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            folder.problem(f"section '{heading}' could not be shown ({type(e).__name__}: {msg[:160]}); the "
                           "files it reads lack what it needs")
            plt.close("all")
            return
        self.add(heading, body)

    def render(self) -> str:
        nav = "".join(f"<a href='#{a}'>{esc(h)}</a>" for a, h, _ in self.sections)
        notes = ""
        if self.problems:
            notes = ("<div class='notes' id='not-shown'><b>Not shown</b><ul>"
                     + "".join(f"<li>{esc(p)}</li>" for p in self.problems) + "</ul></div>")
        body = "".join(f"<section id='{a}'><h2>{esc(h)}</h2>{b}</section>" for a, h, b in self.sections)
        stamp = time.strftime("%Y-%m-%d %H:%M")
        return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width,initial-scale=1'>"
                f"<title>{esc(self.title)}</title><style>{STYLE}</style></head><body>"
                f"<h1>{esc(self.title)}</h1><p class='muted'>cimnas report, written {stamp} from the run folders "
                f"only; self-contained (no network needed).</p><nav>{nav}</nav>{notes}{body}</body></html>\n")


def build_page(paths: Sequence[str | Path]) -> Page:
    """The page of `paths` (run or study folders); problems are collected, never raised."""
    from cimnas.reports.html_runs import hawis_sections, uae_sections
    from cimnas.reports.html_studies import comparison_sections, generic_sections, study_sections

    folders = [open_folder(p) for p in paths]
    shown = [f for f in folders if f.meta]
    names = ", ".join(f.name for f in folders)
    page = Page(f"cimnas report: {names}" if len(names) < 90 else f"cimnas report: {len(folders)} folders")
    page.shown = len(shown)
    if len(shown) > 1:
        comparison_sections(page, shown)
    for f in shown:
        prefix = f"{f.name}: " if len(folders) > 1 else ""
        if f.kind == "hawis":
            hawis_sections(page, f, prefix)
        elif f.kind == "uae-search":
            uae_sections(page, f, prefix)
        elif f.kind in ("study-headroom", "hawis-study", "uae-study", "study-hawis-aligned"):
            study_sections(page, f, prefix)
        else:
            generic_sections(page, f, prefix)
    for f in folders:
        page.problems.extend(f.problems)
    return page


def write_report(paths: Sequence[str | Path], out: str | Path, *, stderr: Any = None) -> tuple[Path, list[str]]:
    """Write the page of `paths` to `out` (atomically); each problem also goes to stderr as one line. Returns
    (path, problems). When no path is a run or study folder: a one-line CimnasError and no page."""
    out = Path(out)
    check_out(out)
    page = build_page(paths)
    if not page.shown:  # nothing to show at all (a typo in the path): an error, not an empty page
        raise CimnasError(f"{'; '.join(page.problems)}; no page written")
    atomic_write_bytes(out, page.render().encode("utf-8"))
    err = stderr if stderr is not None else sys.stderr
    for p in page.problems:
        err.write(f"cimnas report: not shown: {p}\n")
    return out, page.problems


def check_out(out: Path) -> None:
    """--html must name a file (it may lie in a reported folder: `make demo` writes runs/demo/report.html, a new
    file beside the run's own, which stay unchanged)."""
    if out.is_dir():
        raise CimnasError(f"--html {out} is a folder; give a file name such as report.html")
