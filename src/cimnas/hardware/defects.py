"""Device defects on mapped crossbars: a `DefectModel` base class with hooks, and a registry.

A defect model sees one mapped layer at a time and may change its conductances
(`perturb_conductances`, both arrays, shape (slices, C_out, rows)) and / or its read-back weight
(`perturb_weight`). Every draw uses the torch.Generator passed in; Monte-Carlo trials pass a fresh
generator per trial, so noise is drawn once per trial and never per batch.

Registered models (`DEFECTS.create(name, **kw)`):
- `variation`: lognormal resistance variation R' = R0 exp(theta), theta ~ N(0, sigma^2)
  (HAWIS Eq. 3), i.e. G' = G exp(-theta), independently per cell on both arrays.
- `stuck_at`: SA0 (over-forming: stuck at low resistance = Gmax) with rate sa0, SA1 (open switch:
  stuck at high resistance = Gmin) with rate sa1, independently per cell on both arrays (HAWIS
  Sec. II-D; rates 1.75 % / 9.04 % from fabrication data, the authors' tolerance code).
- `gaussian`: additive weight noise W_dep = W + N(0, sigma) (UAE Eq. 1) with mode `absolute`
  (sigma in weight units, UAE's 0.04), `relative` (sigma * max|W| of each layer) or `bitsliced`
  (each cell slice's G+ gets N(0, sigma * (Gmax - Gmin)), i.e. sigma in units of the cell's full
  conductance range, so slice i's weight error is scale * (2^b - 1) * 2^(b i) * N(0, sigma) with b bits
  per cell; this matches `cimnas.uae.analysis`'s bitsliced mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cimnas.errors import check
from cimnas.hardware.mapping import MappedLayer
from cimnas.registry import Registry

DEFECTS = Registry("defect model")

#: HAWIS region of interest (fabrication data, He et al. DAC 2019).
SA0_RATE_PAPER = 0.0175
SA1_RATE_PAPER = 0.0904


class DefectModel:
    """Base class: override one or both hooks. Both get the layer and the trial's generator."""

    def perturb_conductances(self, ml: MappedLayer, g_pos: torch.Tensor, g_neg: torch.Tensor,
                             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return g_pos, g_neg

    def perturb_weight(self, ml: MappedLayer, w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return w

    @property
    def is_identity(self) -> bool:
        """True when the model provably changes nothing (lets callers skip work)."""
        return False


def _normal(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


def _uniform(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


@DEFECTS.register("variation", "lognormal resistance variation R' = R0 exp(theta) (HAWIS Eq. 3)")
class LognormalVariation(DefectModel):
    """R' = R0 * exp(theta), theta ~ N(0, sigma^2) per cell (HAWIS Eq. 3); G' = G * exp(-theta).

    The median of R' (and of G') is R0 (G0); sigma = 0 leaves the conductances exact.
    """

    def __init__(self, sigma: float = 0.1):
        check(sigma >= 0, f"variation sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    @property
    def is_identity(self) -> bool:
        return self.sigma == 0

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.sigma == 0:
            return g_pos, g_neg
        # one draw for both arrays; exp(-theta) computed in place (theta ~ N(0, sigma^2))
        f = _normal((2, *g_pos.shape), gen, g_pos).mul_(-self.sigma).exp_()
        return f[0].mul_(g_pos), f[1].mul_(g_neg)


@DEFECTS.register("stuck_at", "stuck-at faults: SA0 -> Gmax (low R), SA1 -> Gmin (high R), per cell")
class StuckAt(DefectModel):
    """Per cell, independently on the G+ and G- arrays: with probability sa0 the cell is stuck at
    Gmax (SA0, low resistance), with probability sa1 at Gmin (SA1, high resistance) (HAWIS II-D)."""

    def __init__(self, sa0: float = SA0_RATE_PAPER, sa1: float = SA1_RATE_PAPER):
        check(0 <= sa0 <= 1 and 0 <= sa1 <= 1, f"stuck-at rates must be in [0, 1], got sa0={sa0}, sa1={sa1}")
        check(sa0 + sa1 <= 1, f"sa0 + sa1 must be <= 1, got {sa0 + sa1}")
        self.sa0, self.sa1 = float(sa0), float(sa1)

    @property
    def is_identity(self) -> bool:
        return self.sa0 == 0 and self.sa1 == 0

    def _one(self, g: torch.Tensor, u: torch.Tensor, ml: MappedLayer) -> torch.Tensor:
        # u < sa0 -> SA0 (Gmax); sa0 <= u < sa0 + sa1 -> SA1 (Gmin); else unchanged
        stuck = torch.where(u < self.sa0, ml.spec.g_max_s, ml.spec.g_min_s).to(g.dtype)
        return torch.where(u < self.sa0 + self.sa1, stuck, g)

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.is_identity:
            return g_pos, g_neg
        u = _uniform((2, *g_pos.shape), gen, g_pos)  # one independent draw per cell, both arrays
        return self._one(g_pos, u[0], ml), self._one(g_neg, u[1], ml)


@DEFECTS.register("gaussian", "additive Gaussian weight noise W + N(0, sigma) (UAE Eq. 1)")
class GaussianNoise(DefectModel):
    """W_dep = W + N(0, sigma) (UAE Eq. 1). Modes: `absolute` (sigma in weight units), `relative`
    (sigma * max|W| of the layer), `bitsliced` (N(0, sigma * (Gmax - Gmin)) on each slice's G+
    cell, so the read-back error of slice i carries its significance 2^(b i))."""

    MODES = ("absolute", "relative", "bitsliced")

    def __init__(self, sigma: float = 0.04, mode: str = "absolute"):
        check(sigma >= 0, f"gaussian sigma must be >= 0, got {sigma}")
        check(mode in self.MODES, f"unknown gaussian noise mode {mode!r}; choose one of: {', '.join(self.MODES)}")
        self.sigma, self.mode = float(sigma), mode

    @property
    def is_identity(self) -> bool:
        return self.sigma == 0

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.mode != "bitsliced" or self.sigma == 0:
            return g_pos, g_neg
        # sigma in units of a cell's full conductance range (Gmax - Gmin), not of one level step:
        # the read-back error of slice i is then scale * (2^b - 1) * sigma * 2^(b i) * n_i, the same
        # definition as cimnas.uae.analysis (bitsliced mode)
        dg = ml.spec.g_max_s - ml.spec.g_min_s
        return g_pos + _normal(g_pos.shape, gen, g_pos) * (self.sigma * dg), g_neg

    def perturb_weight(self, ml, w, gen):
        if self.mode == "bitsliced" or self.sigma == 0:
            return w
        std = self.sigma if self.mode == "absolute" else self.sigma * w.abs().max()
        return w + _normal(w.shape, gen, w) * std


@dataclass
class DefectConfig:
    """Which defects to draw for a Monte-Carlo trial (all zero = ideal devices)."""

    sa0: float = 0.0
    """Stuck-at-0 rate per cell (stuck at Gmax); HAWIS region of interest up to 0.0175."""
    sa1: float = 0.0
    """Stuck-at-1 rate per cell (stuck at Gmin); HAWIS region of interest up to 0.0904."""
    sigma_variation: float = 0.0
    """Std of theta in R' = R0 exp(theta) (HAWIS Eq. 3)."""
    gaussian_sigma: float = 0.0
    """Std of additive weight noise (UAE Eq. 1; UAE uses 0.04, absolute)."""
    gaussian_mode: Literal["absolute", "relative", "bitsliced"] = "absolute"
    """How gaussian_sigma is scaled: absolute, relative to max|W| per layer, or per bit slice."""

    def validate(self) -> None:
        check(0 <= self.sa0 <= 1, f"--sa0 must be a rate in [0, 1], got {self.sa0}")
        check(0 <= self.sa1 <= 1, f"--sa1 must be a rate in [0, 1], got {self.sa1}")
        check(self.sa0 + self.sa1 <= 1, f"sa0 + sa1 must be <= 1, got {self.sa0 + self.sa1}")
        check(self.sigma_variation >= 0, f"--sigma must be >= 0, got {self.sigma_variation}")
        check(self.gaussian_sigma >= 0, f"--gaussian must be >= 0, got {self.gaussian_sigma}")
        check(self.gaussian_mode in GaussianNoise.MODES,
              f"unknown gaussian mode {self.gaussian_mode!r}; choose one of: {', '.join(GaussianNoise.MODES)}")

    def build(self) -> list[DefectModel]:
        """The defect models to apply, in order (faults after variation: a stuck cell stays stuck)."""
        self.validate()
        out: list[DefectModel] = []
        if self.sigma_variation > 0:
            out.append(DEFECTS.create("variation", sigma=self.sigma_variation))
        if self.sa0 > 0 or self.sa1 > 0:
            out.append(DEFECTS.create("stuck_at", sa0=self.sa0, sa1=self.sa1))
        if self.gaussian_sigma > 0:
            out.append(DEFECTS.create("gaussian", sigma=self.gaussian_sigma, mode=self.gaussian_mode))
        return out


def sample_weight(ml: MappedLayer, defects: list[DefectModel], gen: torch.Generator) -> torch.Tensor:
    """One draw of the layer's effective weight under `defects` (conductance hooks, read-back,
    weight hooks). With no defects this is the ideal read-back, i.e. the quantized weight."""
    g_pos, g_neg = ml.g_pos, ml.g_neg
    for d in defects:
        g_pos, g_neg = d.perturb_conductances(ml, g_pos, g_neg, gen)
    w = ml.read_weight(g_pos, g_neg)
    for d in defects:
        w = d.perturb_weight(ml, w, gen)
    return w
