"""Summaries of repeated measurements, with one naming for every command.

`summarize(values)`: n, mean, std (sample standard deviation, ddof = 1; 0 for n = 1), min, p5 (the 5th
percentile, linear interpolation; UAE's "95%-minimum" is this value), median, max.
`mean_ci(values)` and `diff_ci(a, b)`: Student-t confidence intervals for a mean and for a difference of two
independent means (Welch), used wherever a comparison claims a difference. `detectable_difference(std, n_a, n_b)`:
the smallest difference a design with those seeds per arm detects (two-sided 5 %, 80 % power).
`rank_correlation(x, y, seed=...)`: Kendall's tau-b and Spearman's rho with percentile-bootstrap and Fisher-z
intervals (`cimnas hawis rank-check`: does a proxy rank candidates like their stand-alone accuracies?).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

from cimnas.errors import check


def summarize(values: Sequence[float] | np.ndarray) -> dict:
    """n, mean, std (ddof 1), min, p5, median, max of a non-empty sample."""
    a = np.asarray(values, dtype=float).ravel()
    check(a.size > 0, "cannot summarize an empty list of measurements")
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "p5": float(np.percentile(a, 5)), "median": float(np.median(a)),
            "max": float(a.max())}


def at_chance(accuracy: float, num_classes: int, samples: int) -> bool:
    """Is `accuracy` on `samples` examples indistinguishable from guessing among `num_classes`? True when it is at
    most p + 2 se, p = 1 / num_classes, se = sqrt(p (1 - p) / samples) (the binomial standard error of a guesser)."""
    p = 1.0 / max(int(num_classes), 1)
    return float(accuracy) <= p + 2.0 * math.sqrt(p * (1.0 - p) / max(int(samples), 1))


def quantile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-quantile (0..1, linear interpolation) of a non-empty sample."""
    a = np.asarray(values, dtype=float).ravel()
    check(a.size > 0, "cannot take a quantile of an empty list of measurements")
    check(0.0 <= q <= 1.0, f"quantile must be in [0, 1], got {q}")
    return float(np.quantile(a, q))


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean (the interval is (mean, mean) for n = 1)."""
    a = np.asarray(values, dtype=float).ravel()
    check(a.size > 0, "cannot take a confidence interval of an empty list")
    m = float(a.mean())
    if a.size < 2:
        return m, m, m
    half = float(_st.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
    return m, m - half, m + half


def diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's t interval for the difference of two independent means."""
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    check(x.size > 0 and y.size > 0, "a difference needs at least one measurement on each side")
    d = float(x.mean() - y.mean())
    vx = x.var(ddof=1) / x.size if x.size > 1 else 0.0
    vy = y.var(ddof=1) / y.size if y.size > 1 else 0.0
    se = float(np.sqrt(vx + vy))
    if se == 0.0:
        return d, d, d
    dof_terms = (vx ** 2 / (x.size - 1) if x.size > 1 else 0.0) + (vy ** 2 / (y.size - 1) if y.size > 1 else 0.0)
    dof = (vx + vy) ** 2 / dof_terms if dof_terms > 0 else 1.0
    half = float(_st.t.ppf(0.5 + level / 2, dof) * se)
    return d, d - half, d + half


def combination_ci(samples: Sequence[Sequence[float]], coefs: Sequence[float],
                   level: float = 0.95) -> tuple[float, float, float]:
    """(sum_i c_i mean(x_i), low, high) for independent samples x_i: a t interval with the Welch-Satterthwaite
    degrees of freedom. A difference a - b is coefs (1, -1); a point of a curve interpolated between two measured
    points and compared with a third sample is coefs (1, -(1 - t), -t)."""
    check(len(samples) == len(coefs) and len(samples) > 0, "one coefficient per sample is needed")
    arrs = [np.asarray(x, dtype=float).ravel() for x in samples]
    check(all(a.size > 0 for a in arrs), "every sample needs at least one measurement")
    est = float(sum(c * a.mean() for c, a in zip(coefs, arrs, strict=True)))
    terms = [(c * c * a.var(ddof=1) / a.size if a.size > 1 else 0.0, a.size) for c, a in zip(coefs, arrs, strict=True)]
    var = sum(v for v, _ in terms)
    if var == 0.0:
        return est, est, est
    denom = sum(v * v / (n - 1) for v, n in terms if n > 1)
    dof = var * var / denom if denom > 0 else 1.0
    half = float(_st.t.ppf(0.5 + level / 2, dof) * np.sqrt(var))
    return est, est - half, est + half


def paired_ci(a: dict, b: dict, level: float = 0.95) -> tuple[float, float, float, int] | None:
    """(mean of a[k] - b[k], low, high, n) over the keys both hold (e.g. training seeds): the Student-t interval of
    matched differences (`mean_ci`). Matching by training seed removes what a seed does to every net alike (its
    data order, its validation draw); None with fewer than 2 common keys."""
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return None
    return (*mean_ci([a[k] - b[k] for k in keys], level), len(keys))


def detectable_paired(std_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t test at level `alpha` detects with probability `power`
    from n matched pairs whose differences have standard deviation `std_diff`:
    (t_{1 - alpha/2, n-1} + t_{power, n-1}) * std_diff / sqrt(n)."""
    check(n >= 2, f"a paired detectable difference needs at least 2 pairs, got {n}")
    check(std_diff >= 0 and 0 < alpha < 1 and 0 < power < 1, "need std >= 0, alpha and power in (0, 1)")
    return float((_st.t.ppf(1 - alpha / 2, n - 1) + _st.t.ppf(power, n - 1)) * std_diff / np.sqrt(n))


def detectable_difference(std: float, n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference of two means that a two-sided t test at level `alpha` detects with probability
    `power`, for samples of n_a and n_b with standard deviation `std`:
    (t_{1 - alpha/2, df} + t_{power, df}) * std * sqrt(1/n_a + 1/n_b), df = n_a + n_b - 2 (the usual
    normal-approximation power formula with t quantiles). 13 seeds per arm at std 0.42 detect about 0.5."""
    check(n_a >= 2 and n_b >= 2, f"a detectable difference needs at least 2 measurements per arm, got {n_a}, {n_b}")
    check(std >= 0 and 0 < alpha < 1 and 0 < power < 1, "need std >= 0, alpha and power in (0, 1)")
    df = n_a + n_b - 2
    return float((_st.t.ppf(1 - alpha / 2, df) + _st.t.ppf(power, df)) * std * np.sqrt(1 / n_a + 1 / n_b))


def _kendall_tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every row pair (x[b], y[b]) of two (B, n) arrays (NaN where a row is constant)."""
    out = np.empty(x.shape[0])
    chunk = max(1, 4_000_000 // (x.shape[1] ** 2))
    for s in range(0, x.shape[0], chunk):
        sx = np.sign(x[s:s + chunk, :, None] - x[s:s + chunk, None, :])
        sy = np.sign(y[s:s + chunk, :, None] - y[s:s + chunk, None, :])
        den = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s:s + chunk] = np.where(den > 0, (sx * sy).sum(axis=(1, 2)) / np.where(den > 0, den, 1), np.nan)
    return out


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho (Pearson correlation of average ranks) of every row pair (NaN where a row is constant)."""
    rx, ry = _st.rankdata(x, axis=1), _st.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def fisher_ci(r: float, n: int, var_factor: float, dof: int, level: float = 0.95) -> tuple[float, float] | None:
    """Fisher-z interval tanh(atanh(r) -+ z_q sqrt(var_factor / (n - dof))) of a rank correlation, with the
    Fieller-Hartley-Pearson (1957) variances: Spearman var_factor 1.06, dof 3; Kendall 0.437, dof 4.
    None when n <= dof."""
    if n <= dof:
        return None
    z = float(np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12)))
    half = float(_st.norm.ppf(0.5 + level / 2) * np.sqrt(var_factor / (n - dof)))
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def rank_correlation(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *, seed: int,
                     resamples: int = 2000, level: float = 0.95) -> dict:
    """Kendall's tau-b (scipy.stats.kendalltau) and Spearman's rho of paired measurements, with intervals.

    `*_ci`: percentile bootstrap over the pairs (`resamples` draws of n pairs with replacement from
    numpy's Generator(seed); a draw in which x or y is constant has no correlation and is left out, `used`
    counts the rest). `*_fisher_ci`: Fisher-z intervals (`fisher_ci`), which assume a roughly normal z and are
    a cross-check. A constant x or y has no ranking: the statistics are None and `note` says why."""
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    check(a.size == b.size, f"rank correlation needs paired values; got {a.size} and {b.size}")
    check(a.size >= 3, f"rank correlation needs at least 3 pairs, got {a.size}")
    check(bool(np.isfinite(a).all() and np.isfinite(b).all()), "rank correlation: the values must be finite")
    check(1 <= resamples <= 1_000_000, f"bootstrap resamples must be in 1..1000000, got {resamples}")
    check(0 < level < 1, f"confidence level must be in (0, 1), got {level}")
    out: dict = {"n": int(a.size), "level": level,
                 "bootstrap": {"method": "percentile, pairs resampled", "resamples": resamples, "seed": seed}}
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        for k in ("kendall_tau", "kendall_p", "kendall_ci", "kendall_fisher_ci", "spearman_rho", "spearman_p",
                  "spearman_ci", "spearman_fisher_ci"):
            out[k] = None
        out["note"] = "one of the two lists is constant: no ranking to compare"
        out["bootstrap"]["used"] = 0
        return out
    tau, tau_p = _st.kendalltau(a, b)
    rho, rho_p = _st.spearmanr(a, b)
    idx = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    boot_tau = _kendall_tau_b_rows(a[idx], b[idx])
    boot_rho = _spearman_rows(a[idx], b[idx])
    ok = np.isfinite(boot_tau) & np.isfinite(boot_rho)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]

    def interval(v: np.ndarray) -> list[float] | None:
        return [float(t) for t in np.percentile(v[ok], q)] if ok.any() else None

    fk = fisher_ci(float(tau), a.size, 0.437, 4, level)
    fs = fisher_ci(float(rho), a.size, 1.06, 3, level)
    out.update({"kendall_tau": float(tau), "kendall_p": float(tau_p), "kendall_ci": interval(boot_tau),
                "kendall_fisher_ci": list(fk) if fk else None, "spearman_rho": float(rho),
                "spearman_p": float(rho_p), "spearman_ci": interval(boot_rho),
                "spearman_fisher_ci": list(fs) if fs else None})
    out["bootstrap"]["used"] = int(ok.sum())
    return out
