"""Numbers inside files: the ranges a result record's values must be in (`check_numbers`) and finite checkpoint
tensors (`check_finite_tensors`). A file out of range is refused with one line naming it and the key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from cimnas.errors import CimnasError, check

#: keys whose counts are whole numbers >= 0 (never booleans)
COUNTER_KEYS = frozenset({"epoch", "epochs", "episode", "episodes", "mc_samples", "unique_children", "samples",
                          "trials", "seed", "seeds", "n", "params", "biops", "flops"})
MAX_WIDTH = 1 << 24  #: the largest layer width a result file may name


def _rule(name: str, inherited: str | None) -> str | None:
    """Which range the numbers under key `name` must be in: 'count', 'acc' [0, 1], 'energy' (>= 0), 'width'."""
    if name in COUNTER_KEYS:
        return "count"
    if name == "widths":
        return "width"
    if name == "acc" or name.endswith(("_acc", "accuracy", "accuracies", "_accs")) or name == "noisy":
        return "acc"
    if "energy" in name and (name.endswith(("_uj", "_pj", "_nj")) or name in ("energy", "energy_breakdown")):
        return "energy"
    return inherited


def _bad_number(v: Any, rule: str) -> str | None:
    """What is wrong with leaf `v` under `rule` (None: fine)."""
    if v is None or isinstance(v, str):
        return None
    is_num = isinstance(v, int | float) and not isinstance(v, bool)
    if rule == "count":
        return None if is_num and isinstance(v, int) and v >= 0 else "a whole number >= 0 (not a boolean)"
    if rule == "width":
        return None if is_num and isinstance(v, int) and 1 <= v <= MAX_WIDTH else f"a width in 1 .. {MAX_WIDTH:,}"
    if rule == "acc":
        return None if is_num and 0.0 <= v <= 1.0 else "an accuracy in [0, 1]"
    return None if is_num and math.isfinite(v) and v >= 0 else "an energy >= 0"


def check_numbers(obj: Any, where: str, extra: dict[str, str] | None = None) -> None:
    """Refuse (one line naming `where` and the key) a result record whose numbers are out of range: counters
    (`COUNTER_KEYS`) whole and >= 0, accuracies (`*_acc`, `*accuracy`, `noisy`) in [0, 1], energies (`energy*_uj`
    ...) >= 0, widths positive integers. `extra` maps further key names to a rule ('acc', 'energy', 'count')
    for a reader that knows its file (UAE final.json: `mean`, `p5`). Non-finite numbers never reach here
    (`read_json` refuses them)."""
    stack: list[tuple[Any, str, str | None, int]] = [(obj, "", None, 0)]
    while stack:
        node, key, rule, depth = stack.pop()
        check(depth <= 64, f"{where} is nested too deeply to be a cimnas file; fix or delete it")
        if isinstance(node, dict):
            inherited = rule if rule in ("acc", "energy") else None  # a record under `episodes` has its own keys
            for k, v in node.items():
                name = str(k)
                stack.append((v, f"{key}.{name}" if key else name, (extra or {}).get(name) or _rule(name, inherited),
                              depth + 1))
        elif isinstance(node, list):
            stack.extend((v, f"{key}[{i}]", rule, depth + 1) for i, v in enumerate(node))
        elif rule is not None and (bad := _bad_number(node, rule)) is not None:
            raise CimnasError(f"{where}: {key} = {str(node)[:40]} is not {bad}; the file is damaged or was edited: "
                              "fix or delete it")


def check_finite_tensors(obj: Any, path: str | Path) -> None:
    """Refuse a checkpoint any of whose floating-point tensors (weights, buffers, optimiser state) holds a NaN or
    an infinity: training from it would only report a diverged loss, with the wrong advice."""
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k)) for k, v in node.items())
        elif isinstance(node, list | tuple):
            stack.extend((v, f"{key}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, torch.Tensor) and (node.is_floating_point() or node.is_complex()):
            if node.numel() and not bool(torch.isfinite(node).all()):
                raise CimnasError(f"checkpoint {path}: {key[:120]} holds NaN or infinite values; the file is damaged "
                                  "(not a training problem): delete it or use a new --out folder")
