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
  per cell). The same class draws UAE's noise on a layer's own weight, without a crossbar
  (`GaussianNoise.layer_std` / `sample_weights`): the output-change analysis, noise-aware training
  and the K-sample evaluation all use it (one noise model, one `NOISE_MODES`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def check_finite(value: float, name: str, minimum: float = 0.0) -> float:
    """`value` as a float, refused (one-line CimnasError) when not finite or below `minimum`."""
    v = float(value)
    check(math.isfinite(v) and v >= minimum, f"{name} must be a finite number >= {minimum:g}, got {value}")
    return v


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
        check(math.isfinite(float(sigma)) and sigma >= 0, f"variation sigma must be a finite number >= 0, got {sigma}")
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


#: The modes of the Gaussian defect (the one list: configs, the analysis, training and evaluation use it).
NOISE_MODES = ("absolute", "relative", "bitsliced")


def check_gaussian(sigma: float, mode: str, cell_bits: int, weight_bits: int, prefix: str) -> None:
    """The parameters of `GaussianNoise` (and of the UAE `noise:` section, `prefix` "noise.") are valid."""
    check(math.isfinite(float(sigma)) and sigma >= 0,
          f"{prefix}sigma must be a finite number >= 0 (a standard deviation), got {sigma}")
    check(mode in NOISE_MODES, f"{prefix}mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
    check(1 <= int(cell_bits) <= 16, f"{prefix}cell_bits must be in 1..16, got {cell_bits}")
    check(1 <= int(weight_bits) <= 32, f"{prefix}weight_bits must be in 1..32, got {weight_bits}")


@DEFECTS.register("gaussian", "additive Gaussian weight noise W + N(0, sigma) (UAE Eq. 1)")
class GaussianNoise(DefectModel):
    """W_dep = W + N(0, std_l) (UAE Eq. 1), one std per layer l. Modes (`NOISE_MODES`):

    - `absolute`: std_l = sigma (weight units; UAE's 0.04);
    - `relative`: std_l = sigma * max|W_l|;
    - `bitsliced`: every cell slice's normalised conductance gets N(0, sigma) (sigma in units of a cell's full
      range Gmax - Gmin), so slice k of significance 2^(m k) adds delta_l (2^m - 1) 2^(m k) N(0, sigma) to the
      weight (m bits per cell, delta_l the layer's integer step).

    Two ways to apply it, the same distribution:
    - on a crossbar-mapped layer (`perturb_conductances` / `perturb_weight`, the robustness command): m is the
      spec's bits_per_cell and every slice is drawn;
    - on a layer's own effective weight without a crossbar (`layer_std` + `sample_weights`, the UAE analysis,
      noise-aware training and K-sample evaluation): m = `cell_bits`, delta_l = the quantizer's `to_integer`
      scale (or max|W| / (2^weight_bits - 1) for float layers), and the slices' sum is drawn in one normal of
      std sigma delta_l (2^m - 1) sqrt(sum_k 4^(m k)) (equal in distribution, 1/slices of the random numbers).
    """

    MODES = NOISE_MODES

    def __init__(self, sigma: float = 0.04, mode: str = "absolute", *, cell_bits: int = 4, weight_bits: int = 8):
        check_gaussian(sigma, mode, cell_bits, weight_bits, "gaussian noise ")
        self.sigma, self.mode = float(sigma), mode
        self.cell_bits, self.weight_bits = int(cell_bits), int(weight_bits)

    @property
    def is_identity(self) -> bool:
        return self.sigma == 0

    # ------------------------------------------------------------ on crossbars
    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.mode != "bitsliced" or self.sigma == 0:
            return g_pos, g_neg
        # sigma in units of a cell's full conductance range (Gmax - Gmin), not of one level step:
        # the read-back error of slice i is then scale * (2^b - 1) * sigma * 2^(b i) * n_i (= `layer_std`)
        dg = ml.spec.g_max_s - ml.spec.g_min_s
        return g_pos + _normal(g_pos.shape, gen, g_pos) * (self.sigma * dg), g_neg

    def perturb_weight(self, ml, w, gen):
        if self.mode == "bitsliced" or self.sigma == 0:
            return w
        std = self.sigma if self.mode == "absolute" else self.sigma * w.abs().max()
        return w + _normal(w.shape, gen, w) * std

    # ------------------------------------------------------------ on a layer's effective weight
    def layer_std(self, layer: torch.nn.Module, w: torch.Tensor) -> float:
        """std_l of the additive noise on `layer` whose effective (quantized) weight is `w` (class doc)."""
        if self.mode == "absolute":
            return self.sigma
        if self.mode == "relative":
            return self.sigma * float(w.detach().abs().max())
        q = getattr(layer, "weight_quantizer", None)
        if q is not None and getattr(q, "bits", None) is not None and hasattr(q, "to_integer"):
            _, scale = q.to_integer(layer.active_weight().detach())
            delta, bits = float(scale), int(q.bits)
        else:
            bits = self.weight_bits
            delta = float(w.detach().abs().max()) / (2**bits - 1)
        slices = math.ceil(bits / self.cell_bits)
        levels = 2**self.cell_bits - 1
        return self.sigma * delta * levels * math.sqrt(sum(4 ** (self.cell_bits * k) for k in range(slices)))

    def layer_stds(self, layers: Sequence[torch.nn.Module], weights: Sequence[torch.Tensor]) -> list[float]:
        return [self.layer_std(m, w) for m, w in zip(layers, weights, strict=True)]

    @staticmethod
    def sample_weights(weights: Sequence[torch.Tensor], stds: Sequence[float], n: int | None,
                       generator: torch.Generator) -> list[torch.Tensor]:
        """Perturbed weights W + N(0, std_l), one tensor per layer: shape (n, *W.shape) for `n` samples drawn at
        once (one `normal_` call per layer: the batched path of the 10k-sample analysis), or W.shape for
        `n=None`. The noise is detached; `W` may carry a gradient (noise-aware training), which then flows
        through the sum."""
        out = []
        for w, s in zip(weights, stds, strict=True):
            shape = tuple(w.shape) if n is None else (int(n),) + tuple(w.shape)
            noise = torch.empty(shape, dtype=w.dtype, device=generator.device).normal_(0.0, float(s),
                                                                                        generator=generator)
            noise = noise.to(w.device)
            out.append(noise.add_(w) if not w.requires_grad else w + noise)
        return out


@dataclass
class DefectConfig:
    """Which defects to draw for a Monte-Carlo trial (all zero = ideal devices). The field names are the one
    vocabulary of every command: `--sa0-rate` / `defects.sa0_rate`, `variation_sigma`, `gaussian_sigma` (README)."""

    sa0_rate: float = 0.0
    """Stuck-at-0 rate per cell (stuck at Gmax); HAWIS region of interest up to 0.0175."""
    sa1_rate: float = 0.0
    """Stuck-at-1 rate per cell (stuck at Gmin); HAWIS region of interest up to 0.0904."""
    variation_sigma: float = 0.0
    """Std of theta in R' = R0 exp(theta) (HAWIS Eq. 3)."""
    gaussian_sigma: float = 0.0
    """Std of additive weight noise (UAE Eq. 1; UAE uses 0.04, absolute)."""
    gaussian_mode: Literal["absolute", "relative", "bitsliced"] = "absolute"
    """How gaussian_sigma is scaled: absolute, relative to max|W| per layer, or per bit slice (NOISE_MODES)."""

    def validate(self) -> None:
        check(0 <= self.sa0_rate <= 1, f"--sa0-rate must be a rate in [0, 1], got {self.sa0_rate}")
        check(0 <= self.sa1_rate <= 1, f"--sa1-rate must be a rate in [0, 1], got {self.sa1_rate}")
        total = self.sa0_rate + self.sa1_rate
        check(total <= 1, f"sa0_rate + sa1_rate must be <= 1, got {total}")
        check(self.variation_sigma >= 0, f"--variation-sigma must be >= 0, got {self.variation_sigma}")
        check(self.gaussian_sigma >= 0, f"--gaussian-sigma must be >= 0, got {self.gaussian_sigma}")
        for key in ("sa0_rate", "sa1_rate", "variation_sigma", "gaussian_sigma"):
            v = float(getattr(self, key))
            check(math.isfinite(v), f"defect {key} must be a finite number, got {v}")
        check(self.gaussian_mode in NOISE_MODES,
              f"unknown gaussian mode {self.gaussian_mode!r}; choose one of: {', '.join(NOISE_MODES)}")

    def build(self) -> list[DefectModel]:
        """The defect models to apply, in order (faults after variation: a stuck cell stays stuck)."""
        self.validate()
        out: list[DefectModel] = []
        if self.variation_sigma > 0:
            out.append(DEFECTS.create("variation", sigma=self.variation_sigma))
        if self.sa0_rate > 0 or self.sa1_rate > 0:
            out.append(DEFECTS.create("stuck_at", sa0=self.sa0_rate, sa1=self.sa1_rate))
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
