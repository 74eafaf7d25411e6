"""HAWIS width space (Eq. 7-8): actions -> expansion ratios -> channels, and every sub-net sampler.

Where this lives, and why: both the super-net (`cimnas.nn.supernet`) and the search
(`cimnas.search`) need Eq. 7/8 and the sub-net samplers, and `nn/` never imports `search/`
(DESIGN.md). So the maths lives here, in `nn/`, pure Python + torch; `cimnas.search.spaces`
re-exports it beside the search-only parts (the Eq. 6 states). This module is the only place
that rounds channels (`round_channels`); everything else calls it or a `WidthSpace` method.

API
---
- `round_channels(channels, d)`: Eq. 8 rounding, half-up to a multiple of d, at least d.
- `WidthSpace(base_widths, r_min=1.0, r_max=5.0, d=4, allowed=None)`: frozen config of the space.
  `n_steps` (= L-1 decisions), `ratio(a)` (Eq. 7), `channels(a, c_out)` (Eq. 8), `layer_channels(a, l)` (Eq. 8
  snapped to `allowed[l]`, the crossbar-filling widths of an aligned space; = `channels` when allowed is None),
  `widths(actions) -> WidthArch`, `min_widths()`, `max_widths()` (build the super-net at these),
  `uniform_widths(r, clip=True)` (U-rx), `action_for(width, l)` (inverse of Eq. 7/8);
  samplers for slimmable fine-tuning, all from one `torch.Generator`: `sample_uniform(gen)` (B^1),
  `sample_nonuniform(gen)` (B^2), `morph(arch, gen, jitter)` (B^3), `sandwich(gen, n_random)`;
  `to_dict()` / `WidthSpace.from_dict(d)`.
- `WidthArch(widths)`: one point of the space (frozen); `to_dict`/`from_dict`, `to_json`/`from_json`.
- `validate_widths(widths, space)`: CimnasError naming the first offending layer.

Conventions
-----------
- Layer l of the space is the l-th *searchable* layer (the model's `base_widths` order); the
  classifier's outputs are not part of the space, so there are L-1 actions (HAWIS III-B).
- Rounding in Eq. 8 is half-up (`floor(x + 0.5)`), not Python's banker's rounding, and the result
  is at least `d` so no layer disappears.
- Default `d = 4`: the paper does not state d; the authors' published HAWIS-B ResNet-20 widths
  (84, 188, 284, ...) are multiples of 4 but not of 8.
- Samplers draw actions in float64 from the caller's `torch.Generator` (seeded, no global RNG).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from cimnas.errors import CimnasError, check


def round_channels(channels: float, d: int) -> int:
    """Eq. 8 rounding: round(channels / d) * d, half-up (2.5 -> 3), and never below d."""
    return max(int(d), int(math.floor(channels / d + 0.5)) * int(d))


def width_groups(base: Sequence[int]) -> list[list[int]]:
    """Indices of consecutive layers of equal base width: the groups a uniform widening keeps equal (a CIFAR
    ResNet's stem + stage 1, stage 2, stage 3, whose widths its residual adds tie)."""
    groups: list[list[int]] = []
    for i, b in enumerate(base):
        if groups and base[groups[-1][-1]] == b:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


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
    # aligned space (`search.aligned`): per layer, the widths the search may pick (crossbar-filling widths from
    # `cimnas.hardware.align.aligned_choices`); Eq. 8's result snaps down to the largest of them at or below it
    # (the smallest, below them all). None: every multiple of d. The bounds min_widths / max_widths (the
    # super-net's) and the U-kx baselines are not snapped, so aligned and free searches share one super-net.
    allowed: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_widths", tuple(int(w) for w in self.base_widths))
        if self.allowed is not None:
            object.__setattr__(self, "allowed", tuple(tuple(sorted({int(w) for w in a})) for a in self.allowed))
            check(len(self.allowed) == len(self.base_widths), f"width space: {len(self.allowed)} allowed-width "
                  f"lists for {len(self.base_widths)} searchable layers")
            for i, a in enumerate(self.allowed):
                check(len(a) > 0 and all(w >= 1 and w % self.d == 0 for w in a),
                      f"width space: allowed widths of layer {i} must be a non-empty list of multiples of d={self.d}")
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

    # ---- Eq. 7 / 8 ------------------------------------------------------------------------------
    def ratio(self, action: float) -> float:
        """Eq. 7: expansion ratio of an action (clipped to [0, 1] first)."""
        a = min(max(float(action), 0.0), 1.0)
        return a * (self.r_max - self.r_min) + self.r_min

    def channels(self, action: float, c_out: int) -> int:
        """Eq. 8: channels of a layer with 1x width `c_out` under `action`; a multiple of d, >= d."""
        return round_channels(c_out * self.ratio(action), self.d)

    def layer_channels(self, action: float, layer: int) -> int:
        """Channels of searchable layer `layer` under `action`: Eq. 8, snapped to `allowed` in an aligned space."""
        c = self.channels(action, self.base_widths[layer])
        if self.allowed is None:
            return c
        a = self.allowed[layer]
        below = [w for w in a if w <= c]
        return below[-1] if below else a[0]

    def widths(self, actions: Sequence[float]) -> WidthArch:
        """The architecture chosen by one action per searchable layer."""
        check(len(actions) == self.n_steps,
              f"expected {self.n_steps} actions (one per searchable layer), got {len(actions)}")
        return WidthArch(tuple(self.layer_channels(a, i) for i, a in enumerate(actions)))

    def min_widths(self) -> WidthArch:
        """The smallest widths of the space (Eq. 8 at r_min, not snapped)."""
        return WidthArch(tuple(self.channels(0.0, c) for c in self.base_widths))

    def max_widths(self) -> WidthArch:
        """The largest widths the space can produce (Eq. 8 at r_max, not snapped): build the super-net at these."""
        return WidthArch(tuple(self.channels(1.0, c) for c in self.base_widths))

    def uniform_widths(self, r: float, clip: bool = True) -> WidthArch:
        """U-rx: every layer widened by the same ratio r, rounded as in Eq. 8.

        `clip=True` keeps the result inside the space ([min_widths, max_widths], a sub-net of the
        super-net); `clip=False` gives U-rx for any r > 0 (e.g. a U-6x baseline trained alone).
        """
        check(isinstance(r, int | float) and math.isfinite(r) and r > 0,
              f"a uniform width multiplier must be a number > 0, got {r!r}")
        arch = WidthArch(tuple(round_channels(c * r, self.d) for c in self.base_widths))
        if not clip:
            return arch
        lo, hi = self.min_widths().widths, self.max_widths().widths
        return WidthArch(tuple(min(max(w, a), b) for w, a, b in zip(arch.widths, lo, hi, strict=True)))

    def action_for(self, width: int, layer: int) -> float:
        """Inverse of Eq. 7-8: the action in [0, 1] whose ratio gives exactly `width` before rounding."""
        span = self.r_max - self.r_min
        if span == 0:
            return 0.0
        r = width / self.base_widths[layer]
        return min(max((r - self.r_min) / span, 0.0), 1.0)

    # ---- samplers (slimmable fine-tuning, HAWIS Fig. 2 B) ---------------------------------------
    def sample_uniform(self, gen: torch.Generator) -> WidthArch:
        """B^1: a sub-net with one random action shared by all layers."""
        a = float(torch.rand((), generator=gen, dtype=torch.float64))
        return self.widths([a] * self.n_steps)

    def sample_nonuniform(self, gen: torch.Generator) -> WidthArch:
        """B^2: a sub-net with an independent random action per layer."""
        return self.widths(torch.rand(self.n_steps, generator=gen, dtype=torch.float64).tolist())

    def morph(self, arch: WidthArch, gen: torch.Generator, jitter: float = 0.1) -> WidthArch:
        """B^3: `arch` with every layer's action moved by U(-jitter, jitter), clipped to [0, 1]."""
        validate_widths(arch.widths, self)
        u = torch.rand(self.n_steps, generator=gen, dtype=torch.float64).tolist()
        return self.widths([self.action_for(w, i) + jitter * (2.0 * v - 1.0)
                            for i, (w, v) in enumerate(zip(arch.widths, u, strict=True))])

    def sandwich(self, gen: torch.Generator, n_random: int = 2) -> list[WidthArch]:
        """Sandwich rule (HAWIS Eq. 1): largest, smallest and `n_random` non-uniform sub-nets."""
        return [self.max_widths(), self.min_widths()] + [self.sample_nonuniform(gen) for _ in range(n_random)]

    # ---- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["base_widths"] = list(self.base_widths)
        if self.allowed is None:
            d.pop("allowed")  # space.json of a free space stays as before
        else:
            d["allowed"] = [list(a) for a in self.allowed]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> WidthSpace:
        allowed = data.get("allowed")
        return cls(base_widths=tuple(data["base_widths"]), r_min=float(data.get("r_min", 1.0)),
                   r_max=float(data.get("r_max", 5.0)), d=int(data.get("d", 4)),
                   allowed=None if allowed is None else tuple(tuple(a) for a in allowed))


def validate_widths(widths: Sequence[int], space: WidthSpace) -> WidthArch:
    """Check a user-given width vector against `space`; returns it as a WidthArch.

    Raises CimnasError naming the first bad layer: wrong length, not an integer, not a multiple of
    d, or outside the range [min_widths, max_widths] the space (and its super-net) can produce.
    """
    check(len(widths) == space.n_steps,
          f"width vector has {len(widths)} entries but the model has {space.n_steps} searchable layers")
    lo, hi = space.min_widths().widths, space.max_widths().widths
    for i, w in enumerate(widths):
        check(isinstance(w, numbers.Integral) and not isinstance(w, bool),
              f"width of layer {i} must be an integer, got {w!r}")
        check(w % space.d == 0,
              f"width of layer {i} is {w}, not a multiple of d={space.d}; use {round_channels(w, space.d)}")
        check(lo[i] <= w <= hi[i],
              f"width of layer {i} is {w}, outside the space's range [{lo[i]}, {hi[i]}] "
              f"(base {space.base_widths[i]} x r in [{space.r_min}, {space.r_max}])")
    return WidthArch(tuple(int(w) for w in widths))
