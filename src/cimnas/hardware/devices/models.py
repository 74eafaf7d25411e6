"""Device models: one small class per physical effect, registered in the one defect registry (`DEFECTS`).

Each acts on a mapped layer's conductances (siemens, shape (slices, C_out, rows), both arrays of the differential
pair) through `DefectModel.perturb_conductances`, with the trial's torch.Generator, and says when it is drawn:

- `per_read = False`: drawn once per chip, at programming (or once per chip and time point), and held for every
  inference of the trial (one trial = one chip);
- `per_read = True`: drawn again at every read (every forward pass of a batch: the batch shares one read, as
  aihwkit draws `w_noise` per mini-batch).

All conductance parameters are relative to the crossbar's Gmax (`g_max_s`), so a device model carries across
crossbar specs. Sources are named in each class and in the preset files (presets/*.yaml).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cimnas.errors import check
from cimnas.hardware.defects import DEFECTS, DefectModel, _normal, check_finite

#: The models drawn at every read (the Monte-Carlo path re-draws them per batch).
PER_READ = "per_read"


def poly(x: torch.Tensor, coeffs: Sequence[float]) -> torch.Tensor:
    """sum_i c_i x^i (Horner)."""
    out = torch.zeros_like(x)
    for c in reversed(list(coeffs)):
        out = out * x + float(c)
    return out


@DEFECTS.register("levels", "finite conductance levels: n equally spaced states in [Gmin, Gmax] (at programming)")
class FiniteLevels(DefectModel):
    """A cell holds one of `n_states` equally spaced conductances in [Gmin, Gmax]:

        G_prog = Gmin + round((G - Gmin) / (Gmax - Gmin) * (n - 1)) / (n - 1) * (Gmax - Gmin)   [S]

    Drawn: deterministic, once per chip at programming (no random draw). n_states = 0 means as many states as the
    mapping needs (identity). A mapping with 2^bits_per_cell levels is exact when (n - 1) is a multiple of
    2^bits_per_cell - 1 (binary weights, at Gmin / Gmax, are exact for every n >= 2).
    """

    per_read = False

    def __init__(self, n_states: int = 0):
        check(isinstance(n_states, int) and (n_states == 0 or n_states >= 2),
              f"levels n_states must be 0 (continuous) or an integer >= 2, got {n_states}")
        self.n_states = n_states

    @property
    def is_identity(self) -> bool:
        return self.n_states == 0

    def quantize(self, g: torch.Tensor, g_min: float, g_max: float) -> torch.Tensor:
        steps = self.n_states - 1
        dg = g_max - g_min
        return ((g - g_min) / dg * steps).round().clamp(0, steps) / steps * dg + g_min

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.is_identity:
            return g_pos, g_neg
        s = ml.spec
        return self.quantize(g_pos, s.g_min_s, s.g_max_s), self.quantize(g_neg, s.g_min_s, s.g_max_s)


@DEFECTS.register("programming_noise", "programming noise G + N(0, sigma(G)), sigma a polynomial in G/Gmax")
class ProgrammingNoise(DefectModel):
    """Write-verify leaves each cell off its target: G_prog = max(0, G + sigma(G) z), z ~ N(0, 1), with a
    conductance-dependent sigma(G) = Gmax * max(0, sum_i c_i (G / Gmax)^i)   [S]  (coefficients dimensionless:
    aihwkit's polynomials in uS divided by their reference Gmax). Drawn once per chip and cell, at programming.
    Sources: the preset files (ReRAM: Wan et al., Nature 2022, via aihwkit's fit; PCM: Nandakumar et al. 2019 /
    Joshi et al. 2020)."""

    per_read = False

    def __init__(self, sigma_poly: Sequence[float] = ()):
        self.sigma_poly = [check_finite(c, "programming_sigma_poly coefficient", -math.inf) for c in sigma_poly]

    @property
    def is_identity(self) -> bool:
        return not any(self.sigma_poly)

    def sigma(self, g: torch.Tensor, g_max: float) -> torch.Tensor:
        """sigma(G) in siemens."""
        return poly(g / g_max, self.sigma_poly).clamp_min(0.0) * g_max

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.is_identity:
            return g_pos, g_neg
        gm = ml.spec.g_max_s
        z = _normal((2, *g_pos.shape), gen, g_pos)
        return ((g_pos + self.sigma(g_pos, gm) * z[0]).clamp_min(0.0),
                (g_neg + self.sigma(g_neg, gm) * z[1]).clamp_min(0.0))


@DEFECTS.register("drift", "power-law drift G(t) = G (t/t0)^-nu, nu per device, optional global compensation")
class Drift(DefectModel):
    """Conductance drift (PCM; aihwkit's convention for the time origin):

        G(t) = G_prog * ((t + t0) / t0)^(-nu),   nu = max(0, nu_mean + nu_std z)  per cell   [S, t in s]

    t = time since programming (s), t0 = the first read after programming (s). nu is drawn once per chip and cell
    at programming; G(t) then follows deterministically. Global drift compensation (aihwkit's
    GlobalDriftCompensation; Joshi et al., Nat. Commun. 2020): one scale per layer from a calibration read with
    all inputs on, alpha = sum G_prog / sum G(t) over both arrays (the reference sum is stored at programming),
    applied digitally to the layer's output, here equivalently to its conductances (read-back is linear in G).
    Without drift spread (nu_std = 0) the compensation restores G_prog exactly.
    """

    per_read = False

    def __init__(self, nu_mean: float = 0.0, nu_std: float = 0.0, t0_s: float = 20.0, time_s: float = 0.0,
                 compensate: bool = False):
        self.nu_mean = check_finite(nu_mean, "drift_nu_mean")
        self.nu_std = check_finite(nu_std, "drift_nu_std")
        self.t0_s = check_finite(t0_s, "drift_t0_s")
        check(self.t0_s > 0, f"drift_t0_s must be > 0, got {t0_s}")
        self.time_s = check_finite(time_s, "time (s)")
        self.compensate = bool(compensate)

    @property
    def is_identity(self) -> bool:  # independent of time_s: every time point draws the same chip
        return self.nu_mean == 0 and self.nu_std == 0

    def nu(self, shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        return (_normal(shape, gen, like) * self.nu_std + self.nu_mean).clamp_min(0.0)

    def factor(self, nu: torch.Tensor) -> torch.Tensor:
        """((t + t0) / t0)^(-nu)."""
        return torch.exp(-nu * math.log((self.time_s + self.t0_s) / self.t0_s))

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.is_identity:
            return g_pos, g_neg
        f = self.factor(self.nu((2, *g_pos.shape), gen, g_pos))  # drawn even at t = 0: the same chip at every t
        gp, gn = g_pos * f[0], g_neg * f[1]
        if self.compensate:
            alpha = (g_pos.sum() + g_neg.sum()) / (gp.sum() + gn.sum()).clamp_min(1e-30)
            gp, gn = gp * alpha, gn * alpha
        return gp, gn


@DEFECTS.register("relaxation", "conductance relaxation: the spread sigma(G, t) grows from its programmed value")
class Relaxation(DefectModel):
    """ReRAM conductance relaxation after programming (no power-law drift of the mean; Wan et al., Nature 2022):
    the spread around the target grows with time to sigma(G, t), measured at a few times t_k as polynomials in
    G / Gmax (like `ProgrammingNoise`, whose polynomial is the spread at 1 s). A chip at time t gets the increment

        G(t) = G_prog + sqrt(max(0, sigma(G, t)^2 - sigma(G, 1 s)^2)) z,   z ~ N(0, 1)   [S]

    so its total spread matches the fit at every t_k (independent increments). sigma(G, t) is interpolated
    linearly in ln t between the fitted times and held at the last one beyond it (no data there). Drawn once per
    chip and time point (z drawn even at t <= 1 s, so every time point sees the same chip).
    """

    per_read = False

    def __init__(self, times_s: Sequence[float] = (), sigma_polys: Sequence[Sequence[float]] = (),
                 programming_poly: Sequence[float] = (), time_s: float = 0.0):
        check(len(times_s) == len(sigma_polys), f"relaxation_times_s has {len(times_s)} entries but "
              f"relaxation_sigma_polys has {len(sigma_polys)}; give one polynomial per time")
        self.times_s = [check_finite(t, "relaxation_times_s entry") for t in times_s]
        check(all(t > 1.0 for t in self.times_s) and self.times_s == sorted(set(self.times_s)),
              f"relaxation_times_s must be increasing times > 1 s, got {list(times_s)}")
        self.polys = [list(p) for p in sigma_polys]
        self.prog = ProgrammingNoise(programming_poly)
        self.time_s = check_finite(time_s, "time (s)")

    @property
    def is_identity(self) -> bool:
        return not self.times_s

    def sigma_at(self, g: torch.Tensor, g_max: float) -> torch.Tensor:
        """sigma(G, time_s) in siemens (interpolated in ln t; 1 s = the programming polynomial)."""
        ts = [1.0, *self.times_s]
        sig = [self.prog.sigma(g, g_max)] + [ProgrammingNoise(p).sigma(g, g_max) for p in self.polys]
        t = max(self.time_s, 1.0)
        if t >= ts[-1]:
            return sig[-1]
        k = max(i for i in range(len(ts)) if ts[i] <= t)
        w = (math.log(t) - math.log(ts[k])) / (math.log(ts[k + 1]) - math.log(ts[k]))
        return (1 - w) * sig[k] + w * sig[k + 1]

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.is_identity:
            return g_pos, g_neg
        gm = ml.spec.g_max_s
        z = _normal((2, *g_pos.shape), gen, g_pos)
        out = []
        for i, g in enumerate((g_pos, g_neg)):
            inc = (self.sigma_at(g, gm) ** 2 - self.prog.sigma(g, gm) ** 2).clamp_min(0.0).sqrt()
            out.append((g + inc * z[i]).clamp_min(0.0))
        return out[0], out[1]


@DEFECTS.register("read_noise", "read noise G + N(0, sigma_read * Gmax), drawn at every read")
class ReadNoise(DefectModel):
    """Cycle-to-cycle read noise: every read sees G_read = G + sigma_read * Gmax * z, z ~ N(0, 1) per cell and
    array   [S]. Drawn at every read (a fresh draw per forward pass of a batch), never held by the chip. Not
    clipped at 0 (it is noise on the measured current). aihwkit's ReRAM note suggests about 1 % of the maximal
    weight (`w_noise = 0.01`, ADDITIVE_CONSTANT) for the short-term read noise that Wan et al. do not separate."""

    per_read = True

    def __init__(self, sigma: float = 0.0):
        self.sigma = check_finite(sigma, "read_sigma")

    @property
    def is_identity(self) -> bool:
        return self.sigma == 0

    def perturb_conductances(self, ml, g_pos, g_neg, gen):
        if self.is_identity:
            return g_pos, g_neg
        z = _normal((2, *g_pos.shape), gen, g_pos).mul_(self.sigma * ml.spec.g_max_s)
        return g_pos + z[0], g_neg + z[1]


def is_per_read(d: DefectModel) -> bool:
    """Whether `d` is drawn at every read (the older defects are all drawn once per chip)."""
    return bool(getattr(d, PER_READ, False))
