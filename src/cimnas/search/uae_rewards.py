"""UAE rewards: a distributional statistic of K noisy accuracies (UAE Sec. 4.2), optionally minus
an energy term (beyond the paper).

Statistics: `mean` (UAE-M), `p5` = the 95%-minimum, i.e. the 5th percentile (UAE-95; the old name
`p95` is an alias of it), `max`, `min`, `median`, and `q<number>` for any quantile in [0, 1]
(`q0.05` == `p5`). Quantiles use linear interpolation between order statistics (numpy's default,
as `cimnas.stats`). With K = 0 the reward is the clean accuracy (QuantNAS).

Energy term: `reward = stat - energy_weight * energy / energy_ref`, where `energy_ref` is the
energy of the space's largest child (or a configured value), so `energy_weight = 0.1` costs the
largest network 10 accuracy points.
"""

from __future__ import annotations

import numpy as np

from cimnas import stats
from cimnas.errors import CimnasError

NAMED_STATISTICS = ("mean", "p5", "max", "min", "median")
#: old statistic names still accepted, with the name they stand for
STATISTIC_ALIASES = {"p95": "p5"}


def canonical_statistic(stat: str) -> str:
    """The config vocabulary's name of a statistic (`p95` -> `p5`; others unchanged)."""
    return STATISTIC_ALIASES.get(stat, stat)


def statistic_quantile(stat: str) -> float | None:
    """The quantile a statistic stands for (None for `mean`); unknown names are CimnasErrors."""
    stat = canonical_statistic(stat)
    if stat == "mean":
        return None
    fixed = {"p5": 0.05, "max": 1.0, "min": 0.0, "median": 0.5}
    if stat in fixed:
        return fixed[stat]
    if stat.startswith("q"):
        try:
            q = float(stat[1:])
        except ValueError:
            q = None
        if q is None or not np.isfinite(q):
            raise CimnasError(f"reward statistic {stat!r}: write a quantile as q<number>, e.g. q0.05")
        if not 0.0 <= q <= 1.0:
            raise CimnasError(f"reward statistic {stat!r}: the quantile must be in [0, 1], got {q}")
        return q
    raise CimnasError(f"unknown reward statistic {stat!r}; choose one of {', '.join(NAMED_STATISTICS)} "
                      "(p95 = p5) or q<quantile in [0, 1]>")


def accuracy_statistic(accuracies: list[float], stat: str) -> float:
    """The statistic `stat` of K accuracies (K >= 1)."""
    q = statistic_quantile(stat)
    if len(accuracies) == 0:
        raise CimnasError("no noisy accuracies to summarise; K must be >= 1 for a noisy statistic")
    return float(np.mean(np.asarray(accuracies, dtype=np.float64))) if q is None else stats.quantile(accuracies, q)


def uae_reward(clean_acc: float, noisy_accs: list[float], stat: str, energy: float | None = None,
               energy_weight: float = 0.0, energy_ref: float | None = None) -> float:
    """Reward of one child: stat(noisy accuracies) (clean accuracy when K = 0) minus the optional
    energy penalty `energy_weight * energy / energy_ref`."""
    r = accuracy_statistic(noisy_accs, stat) if noisy_accs else float(clean_acc)
    if energy_weight:
        if energy is None or not energy_ref:
            raise CimnasError("search.energy_weight > 0 needs the hardware energy model (cimnas.hardware)")
        r -= energy_weight * energy / energy_ref
    return r


def summarize(accuracies: list[float]) -> dict:
    """`cimnas.stats.summarize` of a list of accuracies (n, mean, std ddof 1, min, p5, median, max); empty -> {}."""
    return stats.summarize(accuracies) if len(accuracies) else {}
