"""Summaries of repeated measurements, with one naming for every command.

`summarize(values)`: n, mean, std (sample standard deviation, ddof = 1; 0 for n = 1), min, p5 (the 5th
percentile, linear interpolation; UAE's "95%-minimum" is this value), median, max.
`mean_ci(values)` and `diff_ci(a, b)`: Student-t confidence intervals for a mean and for a difference of two
independent means (Welch), used wherever a comparison claims a difference.
"""

from __future__ import annotations

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
