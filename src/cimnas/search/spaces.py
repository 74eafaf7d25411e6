"""HAWIS width search space: actions -> expansion ratios -> channels, and the per-layer states.

API
---
- `WidthSpace(base_widths, r_min=1.0, r_max=5.0, d=4)`: frozen config of the space (Eq. 7-8).
  `space.n_steps` (= L-1 decisions), `space.ratio(a)`, `space.channels(a, c_out)`,
  `space.widths(actions) -> WidthArch`, `space.min_widths()`, `space.max_widths()` (build the
  super-net at `max_widths()`), `space.uniform_widths(r)`, `space.action_for(width, l)` (inverse),
  samplers for slimmable fine-tuning: `sample_uniform(rng)`, `sample_nonuniform(rng)`,
  `morph(arch, rng, jitter)`; `to_dict()` / `WidthSpace.from_dict(d)`.
- `WidthArch(widths)`: one point of the space (frozen); `to_dict`/`from_dict`, `to_json`/`from_json`.
- `validate_widths(widths, space)`: CimnasError naming the first offending layer.
- `LayerState` (static Eq. 6 columns of one layer, measured on the float baseline A_fp),
  `LayerState.from_geom(geom, index, block)`; `build_states(layers, block_indices=None)` ->
  `(L-1, 10)` float array, static columns min-max normalised, dynamic columns zero;
  `episode_state(table, t, prev_action, prev_channels, space)` -> the state s_t with the dynamic
  columns (a_{t-1}, c_{t-1}) filled in.

Conventions
-----------
- Layer l of the space is the l-th *searchable* layer (the model's `base_widths` order); the
  last layer (classifier outputs) is not part of the space, so there are L-1 actions (HAWIS III-B).
- Rounding in Eq. 8 is half-up (`floor(x + 0.5)`), not Python's banker's rounding, and the result
  is at least `d` so no layer disappears.
- Default `d = 4`: the paper does not state d; the authors' published HAWIS-B ResNet-20 widths
  (84, 188, 284, ...) are multiples of 4 but not of 8.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from cimnas.errors import CimnasError, check

#: Column names of the Eq. 6 state vector, in order.
STATE_COLUMNS = ("layer", "block", "c_in", "c_out", "kernel", "stride", "params", "fmap",
                 "prev_action", "prev_channels")
STATE_DIM = len(STATE_COLUMNS)
N_STATIC = 8


@dataclass(frozen=True)
class WidthArch:
    """One HAWIS architecture: the output channels of every searchable layer (last layer fixed)."""

    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    def to_dict(self) -> dict:
        return {"widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> WidthArch:
        check(isinstance(data, dict) and "widths" in data,
              "a width architecture needs a 'widths' list, e.g. {\"widths\": [16, 32]}")
        return cls(tuple(data["widths"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> WidthArch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CimnasError(f"width architecture is not valid JSON ({e.msg}); fix the text") from e
        return cls.from_dict(data)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class WidthSpace:
    """Per-layer width expansion space of HAWIS (Sec. III-B-3).

    An action a_l in [0, 1] becomes a ratio r_l = a_l (r_max - r_min) + r_min (Eq. 7) and then
    channels c_l = round(c_out r_l / d) d (Eq. 8), where c_out is the layer's 1x width.
    """

    base_widths: tuple[int, ...]  # 1x output channels of the L-1 searchable layers
    r_min: float = 1.0  # lower bound of the expansion ratio (same for every layer)
    r_max: float = 5.0  # upper bound; HAWIS uses 5 (U-5x over-fits beyond it)
    d: int = 4  # channel granularity: every width is a multiple of d

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_widths", tuple(int(w) for w in self.base_widths))
        check(self.r_min > 0, f"width space r_min must be > 0, got {self.r_min}; use e.g. r_min: 1.0")
        check(self.r_min <= self.r_max,
              f"width space r_min ({self.r_min}) > r_max ({self.r_max}); set r_min <= r_max")
        check(isinstance(self.d, int) and self.d >= 1,
              f"width space granularity d must be an integer >= 1, got {self.d!r}")
        check(len(self.base_widths) >= 1, "width space needs at least one searchable layer")
        for i, w in enumerate(self.base_widths):
            check(w >= 1, f"base width of layer {i} must be >= 1, got {w}")

    @property
    def n_steps(self) -> int:
        """Number of decisions per episode (L-1)."""
        return len(self.base_widths)

    def ratio(self, action: float) -> float:
        """Eq. 7: expansion ratio of an action (clipped to [0, 1] first)."""
        a = min(max(float(action), 0.0), 1.0)
        return a * (self.r_max - self.r_min) + self.r_min

    def channels(self, action: float, c_out: int) -> int:
        """Eq. 8: channels of a layer with 1x width `c_out` under `action`; a multiple of d, >= d."""
        return max(self.d, _round_half_up(c_out * self.ratio(action) / self.d) * self.d)

    def widths(self, actions: Sequence[float]) -> WidthArch:
        """The architecture chosen by one action per searchable layer."""
        check(len(actions) == self.n_steps,
              f"expected {self.n_steps} actions (one per searchable layer), got {len(actions)}")
        return WidthArch(tuple(self.channels(a, c) for a, c in zip(actions, self.base_widths, strict=True)))

    def min_widths(self) -> WidthArch:
        return self.widths([0.0] * self.n_steps)

    def max_widths(self) -> WidthArch:
        """The largest widths the space can produce: build the super-net at these."""
        return self.widths([1.0] * self.n_steps)

    def uniform_widths(self, r: float) -> WidthArch:
        """Every layer widened by the same ratio r (U-rx), rounded as in Eq. 8 and kept in range."""
        arch = WidthArch(tuple(max(self.d, _round_half_up(c * r / self.d) * self.d)
                               for c in self.base_widths))
        lo, hi = self.min_widths().widths, self.max_widths().widths
        return WidthArch(tuple(min(max(w, a), b) for w, a, b in zip(arch.widths, lo, hi, strict=True)))

    def action_for(self, width: int, layer: int) -> float:
        """Inverse of Eq. 7-8: the action in [0, 1] whose ratio gives exactly `width` before rounding."""
        span = self.r_max - self.r_min
        if span == 0:
            return 0.0
        r = width / self.base_widths[layer]
        return min(max((r - self.r_min) / span, 0.0), 1.0)

    def sample_uniform(self, rng: np.random.Generator) -> WidthArch:
        """A sub-net with one random action shared by all layers (slimmable fine-tuning B^1)."""
        return self.widths([float(rng.random())] * self.n_steps)

    def sample_nonuniform(self, rng: np.random.Generator) -> WidthArch:
        """A sub-net with an independent random action per layer (slimmable fine-tuning B^2)."""
        return self.widths([float(x) for x in rng.random(self.n_steps)])

    def morph(self, arch: WidthArch, rng: np.random.Generator, jitter: float = 0.1) -> WidthArch:
        """B^3: `arch` with every layer's action moved by U(-jitter, jitter), clipped to [0, 1]."""
        validate_widths(arch.widths, self)
        acts = [self.action_for(w, i) + float(rng.uniform(-jitter, jitter))
                for i, w in enumerate(arch.widths)]
        return self.widths(acts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["base_widths"] = list(self.base_widths)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> WidthSpace:
        return cls(base_widths=tuple(data["base_widths"]), r_min=float(data.get("r_min", 1.0)),
                   r_max=float(data.get("r_max", 5.0)), d=int(data.get("d", 4)))


def validate_widths(widths: Sequence[int], space: WidthSpace) -> WidthArch:
    """Check a user-given width vector against `space`; returns it as a WidthArch.

    Raises CimnasError naming the first bad layer: wrong length, not an integer, not a multiple of
    d, or outside the range [min_widths, max_widths] the space (and its super-net) can produce.
    """
    check(len(widths) == space.n_steps,
          f"width vector has {len(widths)} entries but the model has {space.n_steps} searchable layers")
    lo, hi = space.min_widths().widths, space.max_widths().widths
    for i, w in enumerate(widths):
        check(isinstance(w, int | np.integer) and not isinstance(w, bool),
              f"width of layer {i} must be an integer, got {w!r}")
        check(w % space.d == 0,
              f"width of layer {i} is {w}, not a multiple of d={space.d}; "
              f"use {max(space.d, _round_half_up(w / space.d) * space.d)}")
        check(lo[i] <= w <= hi[i],
              f"width of layer {i} is {w}, outside the space's range [{lo[i]}, {hi[i]}] "
              f"(base {space.base_widths[i]} x r in [{space.r_min}, {space.r_max}])")
    return WidthArch(tuple(int(w) for w in widths))


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
