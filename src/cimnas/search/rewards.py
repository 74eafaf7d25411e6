"""Search rewards for HAWIS (Eq. 5) and a robustness-aware accuracy helper.

API
---
- `REWARDS` registry; every entry has the signature
  `reward(error, energy, baseline_energy, lam) -> float` with `error` in [0, 1] (1 - accuracy on
  the held-out split, or 1 - robust accuracy), energies in any one unit (e.g. µJ) and `lam` > 0.
  `REWARDS.create("hawis", error=..., energy=..., baseline_energy=..., lam=...)`.
  Names: `hawis` (Eq. 5), `amc` (AMC's -error * log(cost) form on energy).
- `hawis_reward(error, energy, baseline_energy, lam)`: Eq. 5.
- `robust_accuracy(accs, stat)`: Monte-Carlo accuracies over K defect samples -> one number
  ("mean", "p5" = 5th percentile, "min"); the environment puts `1 - robust_accuracy(...)` in place
  of the clean error for the robustness-aware search (beyond the paper, issue 4 item 5).

UAE's rewards live in `cimnas.search.uae_rewards` (their own registry entries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cimnas.errors import check
from cimnas.registry import Registry

REWARDS = Registry("reward")

#: Statistics accepted by `robust_accuracy`.
ROBUST_STATS = ("mean", "p5", "min")


def _check_inputs(error: float, energy: float, baseline_energy: float, lam: float) -> None:
    check(0.0 <= error <= 1.0, f"reward error must be a fraction in [0, 1], got {error}")
    check(energy > 0, f"candidate energy must be > 0, got {energy}; check the hardware model")
    check(baseline_energy > 0, f"baseline energy Q(A_b) must be > 0, got {baseline_energy}")
    check(lam > 0, f"reward lambda must be > 0, got {lam}; set e.g. search.lam: 1.0")


@REWARDS.register("hawis", "HAWIS Eq. 5: -error * log((Q(cand)/lambda) / Q(A_b))")
def hawis_reward(error: float, energy: float, baseline_energy: float, lam: float) -> float:
    """HAWIS reward, Eq. 5: R = -Error * log((Q(B*)/lambda) / Q(A_b)).

    `error` is the candidate's error on X_eval (fraction), `energy` = Q(B*) its energy,
    `baseline_energy` = Q(A_b) the energy of the binarized baseline A_b (same unit), `lam` the
    trade-off lambda (> 0). Writing R = -Error * log(Q/Q_b) + Error * log(lambda), a larger lambda
    adds a bonus that grows with the error, i.e. it weakens the pull to accuracy and so strengthens
    the pull to low energy: between a high-energy candidate (E_h, Q_h) and a low-energy one
    (E_l > E_h, Q_l) the gap R_l - R_h grows by (E_l - E_h) log(lambda); with equal errors lambda
    cancels. Larger lambda -> cheaper networks: the paper gives HAWIS-A, the low-energy model, the
    larger lambda and HAWIS-B "a smaller penalty on energy" (Sec. IV).

    Sign behaviour, exactly as in the paper: while Q(B*)/lambda > Q(A_b) the log is positive and
    the reward is negative, rising towards 0 as error or energy fall. When Q(B*)/lambda < Q(A_b)
    the log is negative and the reward is *positive*; there a larger error gives a larger reward,
    so choose lambda <= Q(cand)/Q(A_b) over the widths searched (e.g. lambda <= r_min^2 for a
    uniformly widened net, since energy grows roughly with r^2) if that regime is unwanted. AMC's reward
    `-(100 - acc) * 0.01 * log(FLOPs)` has the same form, with log(cost) not normalised.
    """
    _check_inputs(error, energy, baseline_energy, lam)
    return -error * math.log((energy / lam) / baseline_energy)


@REWARDS.register("amc", "AMC form: -error * log(energy / lambda); baseline_energy unused")
def amc_reward(error: float, energy: float, baseline_energy: float, lam: float = 1.0) -> float:
    """AMC-style reward -(100 - acc) * 0.01 * log(cost) with cost = energy / lambda.

    Identical to Eq. 5 with Q(A_b) = 1 in the energy's unit (so it depends on that unit);
    `baseline_energy` is validated but unused. Kept to compare against HAWIS's normalised form.
    """
    _check_inputs(error, energy, baseline_energy, lam)
    return -error * math.log(energy / lam)


def robust_accuracy(accs: Sequence[float] | np.ndarray, stat: str = "mean") -> float:
    """One accuracy from K Monte-Carlo defect samples: "mean", "p5" (5th percentile) or "min".

    The percentile uses NumPy's default linear interpolation, so for K = 100 "p5" lies between
    the 5th and 6th smallest accuracies (UAE's "95%-minimum").
    """
    check(stat in ROBUST_STATS, f"robust accuracy statistic {stat!r} unknown; choose one of {', '.join(ROBUST_STATS)}")
    a = np.asarray(accs, dtype=np.float64).ravel()
    check(a.size >= 1, "robust_accuracy needs at least one Monte-Carlo accuracy (K >= 1)")
    check(bool(np.all(np.isfinite(a))) and bool(np.all((a >= 0) & (a <= 1))),
          "Monte-Carlo accuracies must be fractions in [0, 1]")
    if stat == "mean":
        return float(a.mean())
    if stat == "p5":
        return float(np.percentile(a, 5.0))
    return float(a.min())
