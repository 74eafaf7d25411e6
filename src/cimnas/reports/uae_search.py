"""Figures and the Table-3 layout for UAE search run folders (reads run folders only).

`make_figures(run_dir)`: reward over episodes (with the running best) and clean vs noisy accuracy of every
evaluated child. `table3(run_dirs)`: UAE Table 3 (method, K, accuracy without noise, Monte-Carlo mean and
95%-minimum = p5, search time) from the runs' final.json files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cimnas.errors import CimnasError, check  # noqa: E402
from cimnas.utils.io import check_numbers, read_json, read_jsonl, require_run_kind  # noqa: E402

#: what the figures and Table 3 read from each episode record and from final.json
EPISODE_KEYS = ("episode", "reward", "cache_hit", "clean_acc")
FINAL_KEYS = ("label", "k", "statistic", "clean_acc", "mean", "search_time_h", "episodes", "unique_children")


def _check_run(run_dir: Path) -> None:
    """A `uae search` run folder: another run's files would be misread or overwritten."""
    require_run_kind(run_dir, "uae-search", "`uae search`", "cimnas uae search")


def episode_log(run_dir: str | Path) -> list[dict]:
    """The checked episode records of a `uae search` run (numbers in range, every key the figures read)."""
    run_dir = Path(run_dir)
    check((run_dir / "episodes.jsonl").is_file(), f"{run_dir} has no episodes.jsonl; give a `uae search` run folder")
    _check_run(run_dir)
    log = read_jsonl(run_dir / "episodes.jsonl")
    if not log:
        raise CimnasError(f"{run_dir} has no episodes.jsonl entries to plot")
    for i, r in enumerate(log):
        missing = [k for k in EPISODE_KEYS if k not in r]
        check(not missing and isinstance(r.get("noisy", {}), dict), f"{run_dir}/episodes.jsonl line {i + 1} is "
              f"not a UAE episode record (no {missing[0] if missing else 'noisy mapping'}); fix or delete that line")
        check(isinstance(r["reward"], int | float) and not isinstance(r["reward"], bool),
              f"{run_dir}/episodes.jsonl line {i + 1}: reward {str(r['reward'])[:20]} is not a number; fix or "
              "delete that line")
    return log


def make_figures(run_dir: str | Path, log: list[dict] | None = None) -> list[Path]:
    """Write figures/rewards.png and figures/clean_vs_noisy.png of one run (from `log`, else `episode_log`);
    returns their paths."""
    run_dir = Path(run_dir)
    log = episode_log(run_dir) if log is None else log
    figs = run_dir / "figures"
    figs.mkdir(exist_ok=True)
    ep = [r["episode"] for r in log]
    rew = [r["reward"] for r in log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    reward_axes(ax, ep, rew)
    ax.set_xlabel("episode")
    ax.set_ylabel("reward")
    ax.set_title(f"{run_dir.name}: reward over episodes")
    ax.legend()
    fig.tight_layout()
    p1 = figs / "rewards.png"
    fig.savefig(p1, dpi=120)
    plt.close(fig)
    fresh = [r for r in log if not r["cache_hit"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    clean = [r["clean_acc"] for r in fresh]
    noisy = [r["noisy"].get("mean", r["clean_acc"]) for r in fresh]
    ax.scatter(clean, noisy, s=10, alpha=0.7)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("clean accuracy (search_eval)")
    ax.set_ylabel("mean accuracy under noise")
    ax.set_title("children: clean vs noisy")
    fig.tight_layout()
    p2 = figs / "clean_vs_noisy.png"
    fig.savefig(p2, dpi=120)
    plt.close(fig)
    return [p1, p2]


def reward_axes(ax: Any, episodes: list[int], rewards: list[float]) -> None:
    """Rewards per episode and the best so far, drawn as steps (it only changes at an episode), whole-episode ticks."""
    from cimnas.reports.figures import readable_axes

    best, top = [], float("-inf")
    for r in rewards:
        top = max(top, r)
        best.append(top)
    ax.scatter(episodes, rewards, s=8, alpha=0.6, label="reward")
    ax.step(episodes, best, where="post", color="C3", label="best so far")
    readable_axes(ax, integer_x=True)


def table3(run_dirs: list[str | Path]) -> str:
    """Markdown table in the layout of UAE Table 3 (one row per run with a final.json)."""
    rows = ["| Method | K | statistic | w/o noise | mean | 95%-min (p5) | search time (h) | episodes (unique) |",
            "|---|---|---|---|---|---|---|---|"]
    for d in run_dirs:
        path = Path(d) / "final.json"
        check(path.is_file(), f"{d} has no final.json; run `cimnas uae search` (or `uae final`) there first")
        _check_run(Path(d))
        f = read_json(path)
        missing = [k for k in FINAL_KEYS if k not in f] if isinstance(f, dict) else ["a JSON object"]
        if not missing and "p5" not in f and "p95" not in f:
            missing = ["p5"]
        check(not missing, f"{path} is not a UAE final.json (no {missing[0] if missing else ''}); rerun "
              f"`cimnas uae final --out {d}`")
        check_numbers(f, str(path), {"mean": "acc", "p5": "acc", "p95": "acc", "k": "count",
                                     "search_time_h": "energy"})  # (>= 0 like an energy)
        p5 = f["p5"] if "p5" in f else f["p95"]  # final.json of older runs named the 5th percentile p95
        rows.append(f"| {f['label']} | {f['k']} | {f['statistic'] if f['k'] else '-'} | {100 * f['clean_acc']:.2f}% | "
                    f"{100 * f['mean']:.2f}% | {100 * p5:.2f}% | {f['search_time_h']:.3f} | "
                    f"{f['episodes']} ({f['unique_children']}) |")
    return "\n".join(rows)
