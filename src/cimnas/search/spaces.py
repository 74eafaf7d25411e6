"""HAWIS search space: the width space (re-exported from `cimnas.nn.widths`) and the Eq. 6 states.

The width maths (Eq. 7/8, `round_channels`, `WidthSpace` and all its sub-net samplers,
`WidthArch`, `validate_widths`) lives in `cimnas.nn.widths`, because the super-net in `nn/` needs
it and `nn/` never imports `search/`; it is re-exported here so search code has one import.
This module adds the search-only part: the per-layer states of Eq. 6.

API
---
- Re-exported: `round_channels`, `WidthSpace`, `WidthArch`, `validate_widths` (see cimnas.nn.widths).
- `LayerState` (static Eq. 6 columns of one layer, measured on the float baseline A_fp),
  `LayerState.from_geom(geom, index, block)`; `build_states(layers, block_indices=None)` ->
  `(L-1, 10)` float array, static columns min-max normalised, dynamic columns zero;
  `episode_state(table, t, prev_action, prev_channels, space)` -> the state s_t with the dynamic
  columns (a_{t-1}, c_{t-1}) filled in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cimnas.errors import check
from cimnas.nn.widths import WidthArch, WidthSpace, round_channels, validate_widths

__all__ = ["N_STATIC", "STATE_COLUMNS", "STATE_DIM", "LayerState", "WidthArch", "WidthSpace",
           "build_states", "episode_state", "minmax_columns", "round_channels", "validate_widths"]

#: Column names of the Eq. 6 state vector, in order.
STATE_COLUMNS = ("layer", "block", "c_in", "c_out", "kernel", "stride", "params", "fmap",
                 "prev_action", "prev_channels")
STATE_DIM = len(STATE_COLUMNS)
N_STATIC = 8


@dataclass(frozen=True)
class LayerState:
    """Static part of the Eq. 6 state of one searchable layer, measured on the float baseline A_fp."""

    index: int  # l: position among the searchable layers (0-based)
    block: int  # l_s: residual block (or stage) the layer belongs to
    c_in: int  # input channels (features for fc)
    c_out: int  # output channels (features for fc)
    kernel: int  # kernel size (1 for fc)
    stride: int
    params: int  # number of weights k*k*c_in*c_out
    fmap: int  # input feature-map size h*w (1 for fc)
    extra: dict = field(default_factory=dict, compare=False)  # free-form (e.g. the layer name)

    @classmethod
    def from_geom(cls, geom, index: int, block: int) -> LayerState:
        """From a `cimnas.nn.counting.LayerGeom` traced on A_fp."""
        return cls(index, block, geom.in_channels, geom.out_channels, geom.kernel_size,
                   geom.stride, geom.params, geom.in_hw[0] * geom.in_hw[1], {"name": geom.name})

    def static_vector(self) -> list[float]:
        return [self.index, self.block, self.c_in, self.c_out, self.kernel, self.stride,
                self.params, self.fmap]


def minmax_columns(table: np.ndarray) -> np.ndarray:
    """Min-max normalise every column of a 2-D array to [0, 1]; a constant column becomes 0."""
    table = np.asarray(table, dtype=np.float64)
    lo, hi = table.min(axis=0), table.max(axis=0)
    span = hi - lo
    out = np.zeros_like(table)
    nz = span > 0
    out[:, nz] = (table[:, nz] - lo[nz]) / span[nz]
    return out


def build_states(layers: Sequence, block_indices: Sequence[int] | None = None) -> np.ndarray:
    """The (L-1, 10) state table of Eq. 6 for the searchable layers, normalised per column.

    `layers`: `LayerState`s, or `LayerGeom`s traced on A_fp (pass only the L-1 searchable layers,
    e.g. `geoms[:-1]`); for LayerGeoms `block_indices` gives l_s per layer (default: l).
    The two dynamic columns (a_{l-1}, c_{l-1}) are zero here; `episode_state` fills them.
    """
    check(len(layers) >= 1, "build_states needs at least one layer")
    if block_indices is not None:
        check(len(block_indices) == len(layers),
              f"got {len(block_indices)} block indices for {len(layers)} layers; give one per layer")
    rows = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, LayerState):
            layer = LayerState.from_geom(layer, i, block_indices[i] if block_indices is not None else i)
        rows.append(layer.static_vector())
    table = np.zeros((len(rows), STATE_DIM), dtype=np.float64)
    table[:, :N_STATIC] = minmax_columns(np.array(rows, dtype=np.float64))
    return table


def episode_state(table: np.ndarray, t: int, prev_action: float, prev_channels: int,
                  space: WidthSpace) -> np.ndarray:
    """s_t of Eq. 6: row t of `table` with a_{t-1} and c_{t-1} (channels chosen for layer t-1).

    c_{t-1} is normalised over the range of channels the space can produce in any layer, so all
    10 entries lie in [0, 1]. For t = 0 pass prev_action=0 and prev_channels=0 (both map to 0).
    """
    check(0 <= t < table.shape[0], f"step {t} outside the state table of {table.shape[0]} layers")
    s = table[t].copy()
    s[N_STATIC] = min(max(float(prev_action), 0.0), 1.0)
    lo = min(space.min_widths().widths)
    hi = max(space.max_widths().widths)
    s[N_STATIC + 1] = 0.0 if (prev_channels <= 0 or hi == lo) else min(max((prev_channels - lo) / (hi - lo), 0.0), 1.0)
    return s
