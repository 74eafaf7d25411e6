"""What a run found, as a few (label, value) facts: `cimnas show RUN`, the top of each HTML run section and the
side-by-side comparison of several runs. Reads the run folder only (reports/folder.py)."""

from __future__ import annotations

import re
from typing import Any

from cimnas.reports.folder import Folder, open_folder
from cimnas.utils.units import pct_or_dash as _pct

#: the file a finished run or study of each kind holds (a run without it stopped or is still running)
RESULT_FILE = {"study-headroom": "headroom.json", "hawis-study": "compare.md", "uae-study": "table3.md",
               "study-hawis-aligned": "hawis_aligned.json",
               "uae-analysis": "analysis.json", "uae-table1": "table1.json"}
_UNIFORM = re.compile(r"^U-[0-9.]+x$")


def is_uniform(label: str) -> bool:
    """A U-kx baseline of stage C (every base width times k)."""
    return bool(_UNIFORM.match(label))


def is_aligned(label: str) -> bool:
    """An aligned-uniform baseline (crossbar-filling widths, `cimnas align`): a label naming 'align', of the form
    A-kx, or the aligned study's AU-<widths per group>."""
    return "align" in label.lower() or bool(re.match(r"^(A-[0-9.]+x|AU-[0-9-]+)$", label))


def _g(v: Any, unit: str = "") -> str:
    return f"{v:.4g}{unit}" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def run_facts(f: Folder) -> list[tuple[str, str, bool]]:
    """(label, value, headline?) of what the run found, by kind; [] for a folder that is not a run."""
    if not f.meta:
        return []
    done = (f.path / RESULT_FILE.get(f.kind or "", "final.json")).is_file()
    status = "in progress" if f.in_progress else "finished" if done else "stopped before its results"
    facts: list[tuple[str, str, bool]] = [("kind", f.kind_name, False), ("status", status, False)]
    if f.kind == "hawis":
        facts += _hawis(f)
    elif f.kind == "uae-search":
        facts += _uae(f)
    elif f.kind == "train":
        final = f.json("final.json") or {}
        facts += [("test accuracy", _pct(final.get("test_acc")), True),
                  ("held-out accuracy", _pct(final.get("val_acc")), True),
                  ("epochs logged", str(len(f.jsonl("metrics.jsonl"))), False)]
    return facts


def _hawis(f: Folder) -> list[tuple[str, str, bool]]:
    final = f.json("final.json") or {}
    stage_c = f.json("stage_c.json") or {}
    best = f.json("best_arch.json") or {}
    eps = f.jsonl("episodes.jsonl")
    out = []
    if final:
        out += [("final test accuracy", _pct(final.get("test_accuracy")), True),
                ("energy per inference", _g(final.get("energy_uj"), " µJ"), True),
                ("latency", _g(final.get("latency_us"), " µs"), True),
                ("crossbars", str(final.get("crossbars", "-")), True),
                ("held-out accuracy", _pct(final.get("val_accuracy")), False),
                ("widths", " ".join(map(str, final.get("widths") or [])), False)]
        r = final.get("robustness")
        if r:
            out.append((f"under defects ({r.get('trials')} trials): mean ± std, p5",
                        f"{_pct(r.get('mean'))} ± {_pct(r.get('std'))}, {_pct(r.get('p5'))}", True))
    for label, v in sorted(stage_c.items(), key=lambda kv: kv[1].get("energy_uj") or 0.0):
        if is_uniform(label) or is_aligned(label):
            runs = (v.get("seed_runs") or {}).get("test_accuracy") if isinstance(v.get("seed_runs"), dict) else None
            acc = _pct(v.get("test_accuracy")) + (" (seed 0)" if isinstance(runs, list) and len(runs) > 1 else "")
            out.append((f"baseline {label}", f"{acc} at {_g(v.get('energy_uj'), ' µJ')}", False))
    sc = final.get("seed_comparison")
    if isinstance(sc, dict) and isinstance(sc.get("sentence"), str):
        out.append(("over training seeds", sc["sentence"], True))  # the run's verdict (pipelines/hawis/seeds.py)
    if eps:
        out.append(("episodes", str(len(eps)), False))
    if best:
        out.append(("search best", f"episode {best.get('episode')}, reward {_g(best.get('reward'))}, held-out "
                    f"{_pct(best.get('accuracy'))}, {_g(best.get('energy_uj'), ' µJ')}"
                    + (f" (re-ranked on the final super-net; search reward {_g(best.get('search_reward'))})"
                       if best.get("reranked") else ""), False))
    return out


def _uae(f: Folder) -> list[tuple[str, str, bool]]:
    final = f.json("final.json") or {}
    best = f.json("best_arch.json") or {}
    eps = f.jsonl("episodes.jsonl")
    out = []
    if final:
        out += [("accuracy without noise", _pct(final.get("clean_acc")), True),
                ("under noise: mean ± std", f"{_pct(final.get('mean'))} ± {_pct(final.get('std'))}", True),
                ("95%-minimum (p5)", _pct(final.get("p5", final.get("p95"))), True),
                ("energy per inference", _g(final.get("energy_uj"), " µJ"), True),
                ("noise samples", str(final.get("mc_samples", "-")), False),
                ("child", str(final.get("arch_key", "-")), False)]
    if eps:
        out.append(("episodes (cache hits)", f"{len(eps)} ({sum(1 for r in eps if r.get('cache_hit'))})", False))
        out.append(("best reward", _g(max(r.get("reward", float("-inf")) for r in eps)), False))
    if best and not final:
        out.append(("search best child", str(best.get("arch_key", "-")), False))
    return out


def show_text(path: str, *, use_rich: bool | None = None) -> tuple[str, list[str]]:
    """`cimnas show`: the run's facts as a short table (rich when installed, else plain) and its problems."""
    f = open_folder(path)
    facts = run_facts(f)
    if use_rich is None:
        try:
            import rich  # noqa: F401
            use_rich = True
        except ImportError:
            use_rich = False
    if not facts:
        return "", f.problems
    if use_rich:
        import io

        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{f.path}", show_header=False)
        t.add_column(style="bold")
        t.add_column()
        for k, v, main in facts:
            t.add_row(k, f"[bold]{v}[/bold]" if main else v)
        buf = io.StringIO()
        Console(file=buf, width=110, force_terminal=False).print(t)
        return buf.getvalue(), f.problems
    width = max(len(k) for k, _, _ in facts)
    lines = [str(f.path), "-" * min(100, width + 40)]
    lines += [f"{k:<{width}}  {v}" for k, v, _ in facts]
    return "\n".join(lines) + "\n", f.problems
