"""Crossbar-filling widths: where the energy staircase steps, per-layer fill, and the aligned-uniform baseline.

The energy model (energy.py, MNSIM-2.0's accounting) charges each layer for whole crossbars (PEs), whole tiles
and whole read rounds: with 3x3 kernels a 256-row crossbar holds floor(256 / 9) = 28 input channels, a layer pays
for tiles of `crossbars_per_tile` PEs, and a read round drives `rows_per_read` = 128 rows (14 channels of a 3x3
kernel) and converts `adcs_per_crossbar` = 128 columns. So crossbar energy is a staircase in every width: flat-ish
(+1-2 % per 4 channels) along a step, a jump where a width starts a new crossbar, tile or read round.

Definitions (all through `estimate`, the one crossbar count of the project; nothing is re-counted here):

- the *counts* of a network are, per layer, (charged PEs, tiles, read rounds per position): what `estimate_layer`
  multiplies its per-event energies by;
- a width x (a multiple of d) of one layer, or of a group of tied layers, is *filling* when x + d changes the counts
  and the energy jump J(x) = E(x + d) - E(x) exceeds the increments beside it, min(J(x - d), J(x + d)), by more
  than `min_jump` (default 25 %). The second condition drops count changes that cost next to nothing (the
  flattened classifier starts a new tile every ~21 channels of the last stage, < 0.01 % of the energy);
  `min_jump=None` keeps every count change (the literal rule);
- the *lower neighbour* of a width w is the largest filling width <= w (None when w is on the first step: no
  narrower width saves more than the linear slope), the *upper neighbour* the smallest filling width > w;
- the *fill* of a layer is the share of the cells it pays for (charged PEs x rows x columns) that hold a weight
  (`fill_pct`), with the row and column shares of its crossbars beside it;
- the *aligned-uniform* net of U-kx: every group of tied widths (consecutive layers of equal base width: ResNet's
  stem + stage 1, stage 2, stage 3, whose widths the residual adds tie) snapped down to its lower neighbour, the
  other groups held at U-kx while each group is scanned. Given an energy budget instead of k: the aligned-uniform
  net of largest energy at or below the budget, over k on the grid where some group's U-kx width changes.

API: `ArchProbe` (a model description + spec, energies and counts of width vectors, cached), `layer_fill`,
`align(probe, widths, d)` (per-layer neighbours, their energies, the fill and the saving), `snap_uniform`,
`aligned_uniform(model_name, spec, width_mult=... | energy_budget=..., ...)` (the one call for studies and demos),
`aligned_choices` (per-layer allowed widths of the aligned HAWIS search space, `search.aligned: true`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from cimnas.errors import CimnasError, check
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.energy import estimate
from cimnas.nn.counting import arch_geometry
from cimnas.nn.models import build_model
from cimnas.nn.widths import round_channels, width_groups

#: scans stop this many crossbar heights / widths past a width (a step always comes sooner)
_SCAN_SPAN = 4
MIN_JUMP = 0.25


class ArchProbe:
    """A registered model on a crossbar spec: energy (uJ) and counts of any width vector, cached.

    `arch_kw`: `arch_geometry` keywords (in_channels, num_classes, image_size, precision, bits, refactor and the
    model's own options, e.g. shortcut)."""

    def __init__(self, model_name: str, spec: CrossbarSpec, **arch_kw: Any):
        self.model_name, self.spec, self.arch_kw = model_name, spec, arch_kw
        spec.validate()
        kw = {k: v for k, v in arch_kw.items() if k not in ("precision", "bits", "refactor")}
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            probe = build_model(model_name, precision="float", **kw)
        check(hasattr(probe, "base_widths"), f"model {model_name!r} has no width vector to align")
        self.base = [int(w) for w in probe.base_widths]
        self.names = list(probe.searchable_layer_names())
        self._cache: dict[tuple[int, ...], dict] = {}

    def estimate(self, widths: Sequence[int]) -> dict:
        key = tuple(int(w) for w in widths)
        if key not in self._cache:
            check(len(key) == len(self.base), f"{self.model_name} expects {len(self.base)} widths (one per "
                  f"searchable layer), got {len(key)}")
            check(all(w >= 1 for w in key), f"{self.model_name} widths must be positive integers, got {list(key)}")
            self._cache[key] = estimate(arch_geometry(self.model_name, widths=list(key), **self.arch_kw), self.spec)
        return self._cache[key]

    def energy(self, widths: Sequence[int]) -> float:
        return float(self.estimate(widths)["energy_uj"])

    def counts(self, widths: Sequence[int]) -> tuple:
        """Per layer (charged PEs, tiles, read rounds): the integers the energy model charges."""
        return tuple((r["charged_crossbars"], r["tiles"], r["read_rounds"]) for r in self.estimate(widths)["layers"])

    def uniform(self, k: float, d: int) -> list[int]:
        """U-kx: every base width times k, rounded to a multiple of d (Eq. 8, as the studies' U-kx)."""
        return [round_channels(b * k, d) for b in self.base]


def layer_fill(r: dict, spec: CrossbarSpec) -> dict:
    """Fill of one layer's crossbars (an `estimate_layer` record): used cells / cells of the charged PEs, and the
    used share of its crossbars' rows and columns, in %."""
    used = r["used_rows"] * r["used_columns"]
    return {"fill_pct": 100.0 * used / (r["charged_crossbars"] * spec.rows * spec.columns),
            "row_fill_pct": 100.0 * r["used_rows"] / (r["row_tiles"] * spec.rows),
            "column_fill_pct": 100.0 * r["used_columns"] / (r["col_tiles"] * spec.columns)}


# ---------------------------------------------------------------------------- steps of the staircase
def _set(widths: Sequence[int], idxs: Sequence[int], x: int) -> list[int]:
    out = list(widths)
    for i in idxs:
        out[i] = x
    return out


def is_filling(probe: ArchProbe, widths: Sequence[int], idxs: Sequence[int], x: int, d: int,
               min_jump: float | None = MIN_JUMP) -> bool:
    """Whether width x of layers `idxs` (the others as in `widths`) fills: x + d starts a new crossbar, tile or
    read round, and (unless min_jump is None) its energy jump stands out of the slope beside it (module doc)."""
    def e(v: int) -> float:
        return probe.energy(_set(widths, idxs, v))

    if probe.counts(_set(widths, idxs, x)) == probe.counts(_set(widths, idxs, x + d)):
        return False
    if min_jump is None:
        return True
    jump = e(x + d) - e(x)
    beside = [e(x + 2 * d) - e(x + d)] + ([e(x) - e(x - d)] if x - d >= 1 else [])
    return jump > (1.0 + min_jump) * min(beside)


def lower_filling(probe: ArchProbe, widths: Sequence[int], idxs: Sequence[int], w: int, d: int,
                  min_jump: float | None = MIN_JUMP) -> int | None:
    """Largest filling multiple of d at or below w (None: w is on the first step)."""
    x = (w // d) * d
    while x >= d:
        if is_filling(probe, widths, idxs, x, d, min_jump):
            return x
        x -= d
    return None


def upper_filling(probe: ArchProbe, widths: Sequence[int], idxs: Sequence[int], w: int, d: int,
                  min_jump: float | None = MIN_JUMP) -> int | None:
    """Smallest filling multiple of d above w (None within the scan span: no step ahead)."""
    x, stop = (w // d + 1) * d, w + _SCAN_SPAN * max(probe.spec.rows, probe.spec.columns)
    while x <= stop:
        if is_filling(probe, widths, idxs, x, d, min_jump):
            return x
        x += d
    return None


def filling_widths(probe: ArchProbe, widths: Sequence[int], idxs: Sequence[int], lo: int, hi: int, d: int,
                   min_jump: float | None = MIN_JUMP) -> list[int]:
    """Every filling multiple of d in [lo, hi]."""
    start = max(d, math.ceil(lo / d) * d)
    return [x for x in range(start, hi + 1, d) if is_filling(probe, widths, idxs, x, d, min_jump)]


# ---------------------------------------------------------------------------- a width vector
def check_d(d: int) -> None:
    check(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1024,
          f"channel granularity d must be an integer in 1..1024, got {d!r}")


def align(probe: ArchProbe, widths: Sequence[int], d: int = 4, min_jump: float | None = MIN_JUMP) -> dict:
    """Per searchable layer of `widths`: its lower / upper filling neighbours with the network energy at each
    (only that layer changed) and the saving of the lower one; per conv / FC layer its fill; the aligned vector
    (every layer at its lower neighbour, or kept where it has none) and its energy."""
    check_d(d)
    widths = [int(w) for w in widths]
    base = probe.estimate(widths)
    e0 = float(base["energy_uj"])
    rows = []
    for i, w in enumerate(widths):
        lo = lower_filling(probe, widths, [i], w, d, min_jump)
        hi = upper_filling(probe, widths, [i], w, d, min_jump)
        e_lo = probe.energy(_set(widths, [i], lo)) if lo is not None else None
        rows.append({"index": i, "layer": probe.names[i], "width": w, "lower": lo, "upper": hi,
                     "energy_uj": e0, "lower_energy_uj": e_lo,
                     "upper_energy_uj": probe.energy(_set(widths, [i], hi)) if hi is not None else None,
                     "saving_uj": e0 - e_lo if e_lo is not None else 0.0,
                     "saving_pct": 100.0 * (e0 - e_lo) / e0 if e_lo is not None and e0 > 0 else 0.0})
    aligned = [r["lower"] if r["lower"] is not None else r["width"] for r in rows]
    e_al = probe.energy(aligned)
    layers = [{k: r[k] for k in ("name", "kind", "in_channels", "out_channels", "kernel_size", "crossbars",
                                 "charged_crossbars", "tiles", "read_rounds", "energy_uj")} | layer_fill(r, probe.spec)
              for r in base["layers"]]
    return {"model": probe.model_name, "preset": probe.spec.name, "d": d, "min_jump": min_jump,
            "widths": widths, "energy_uj": e0, "neighbours": rows, "layers": layers,
            "aligned": {"widths": aligned, "energy_uj": e_al, "saving_pct": 100.0 * (e0 - e_al) / e0 if e0 else 0.0}}


# ---------------------------------------------------------------------------- the aligned-uniform family
def snap_uniform(probe: ArchProbe, k: float, d: int = 4, min_jump: float | None = MIN_JUMP) -> list[int]:
    """U-kx with every group of tied widths at its lower filling neighbour (kept where it has none)."""
    u = probe.uniform(k, d)
    out = list(u)
    for g in width_groups(probe.base):
        lo = lower_filling(probe, u, g, u[g[0]], d, min_jump)
        if lo is not None:
            out = _set(out, g, lo)
    return out


def _entry(probe: ArchProbe, k: float, d: int, min_jump: float | None) -> dict:
    u, w = probe.uniform(k, d), snap_uniform(probe, k, d, min_jump)
    eu, ew = probe.energy(u), probe.energy(w)
    return {"width_mult": k, "widths": w, "energy_uj": ew, "uniform_widths": u, "uniform_energy_uj": eu,
            "saving_pct": 100.0 * (eu - ew) / eu if eu else 0.0}


def aligned_uniform(model_name: str, spec: CrossbarSpec, *, width_mult: float | None = None,
                    energy_budget: float | None = None, d: int = 4, min_jump: float | None = MIN_JUMP,
                    k_max: float = 16.0, probe: ArchProbe | None = None, **arch_kw: Any) -> dict:
    """The aligned-uniform net of U-`width_mult`x, or the one of largest energy at or below `energy_budget` (uJ).

    Returns {width_mult, widths, energy_uj, uniform_widths, uniform_energy_uj, saving_pct}: for a budget,
    `width_mult` is the smallest k on the grid whose snapped net it is. `arch_kw` as `ArchProbe` (in_channels,
    num_classes, image_size, precision, refactor, model options); pass `probe` to reuse one's cache."""
    check((width_mult is None) != (energy_budget is None), "give exactly one of width_mult or energy_budget")
    check_d(d)
    probe = probe or ArchProbe(model_name, spec, **arch_kw)
    if width_mult is not None:
        check(isinstance(width_mult, int | float) and 0 < width_mult <= k_max,
              f"width_mult must be in (0, {k_max:g}], got {width_mult!r}")
        return _entry(probe, float(width_mult), d, min_jump)
    check(isinstance(energy_budget, int | float) and math.isfinite(energy_budget) and energy_budget > 0,
          f"energy_budget must be a positive number of uJ, got {energy_budget!r}")
    # the k at which some group's U-kx width moves by d: k = (m - 1/2) d / b (half-up rounding), m = 1, 2, ...
    ks = sorted({(m - 0.5) * d / b for b in set(probe.base) for m in range(1, int(k_max * b / d) + 2)
                 if (m - 0.5) * d / b <= k_max} | {d / max(probe.base) / 4})
    best, over = None, 0
    for k in ks:
        entry = _entry(probe, k, d, min_jump)
        if entry["energy_uj"] <= energy_budget:
            over = 0
            if best is None or entry["energy_uj"] > best["energy_uj"]:
                best = entry
        else:
            over += 1
            if over >= 8:  # the snapped energy grows with k; a few more ks guard against a local dip
                break
    if best is None:
        raise CimnasError(f"no aligned-uniform {model_name} at or below {energy_budget:.4g} uJ (the narrowest "
                          f"costs {_entry(probe, ks[0], d, min_jump)['energy_uj']:.4g} uJ)")
    return best


def aligned_choices(probe: ArchProbe, lo: Sequence[int], hi: Sequence[int], d: int = 4,
                    min_jump: float | None = MIN_JUMP, reference: Sequence[int] | None = None) -> list[list[int]]:
    """Per searchable layer, the widths in [lo, hi] (multiples of d) that an aligned search offers: its filling
    widths, and every width below the first of them (the first step: nothing narrower saves more than the
    slope). A layer with no filling width in range keeps every width. The other layers sit at `reference`
    (default: the base widths); with outputs within one crossbar's columns a width's steps do not depend on them."""
    check_d(d)
    ref = list(reference) if reference is not None else list(probe.base)
    out = []
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        every = list(range(max(d, math.ceil(a / d) * d), b + 1, d))
        fill = filling_widths(probe, ref, [i], a, b, d, min_jump)
        out.append(sorted({x for x in every if not fill or x <= fill[0]} | set(fill)) or every)
    return out


__all__ = ["MIN_JUMP", "ArchProbe", "align", "aligned_choices", "aligned_uniform", "filling_widths", "is_filling",
           "layer_fill", "lower_filling", "snap_uniform", "upper_filling"]
