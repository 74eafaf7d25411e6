"""HAWIS reward (Eq. 5), AMC form and the robustness-aware accuracy helper vs hand computations."""

import math

import numpy as np
import pytest

from cimnas.errors import CimnasError
from cimnas.search.rewards import REWARDS, amc_reward, hawis_reward, robust_accuracy


def test_hawis_reward_hand_computation():
    # error 0.1, Q(cand) = 200 uJ, lambda = 2, Q(A_b) = 50 uJ: -0.1 * ln((200 / 2) / 50) = -0.1 ln 2
    assert hawis_reward(0.1, 200.0, 50.0, 2.0) == pytest.approx(-0.1 * math.log(2.0), rel=1e-12)
    # lambda = 1 and the candidate equal to the baseline: log 1 = 0, reward 0 whatever the error
    assert hawis_reward(0.3, 50.0, 50.0, 1.0) == 0.0


def test_hawis_reward_sign_flips_when_log_is_negative():
    # (Q/lambda)/Q_b = (40/2)/50 = 0.4 < 1: the log is negative and the reward positive, and it
    # grows with the error there (the paper's form, documented in the docstring).
    r_low = hawis_reward(0.1, 40.0, 50.0, 2.0)
    r_high = hawis_reward(0.2, 40.0, 50.0, 2.0)
    assert r_low == pytest.approx(-0.1 * math.log(0.4))
    assert 0 < r_low < r_high


def test_hawis_reward_prefers_lower_error_and_energy_in_normal_regime():
    base = hawis_reward(0.10, 300.0, 30.0, 1.0)
    assert hawis_reward(0.08, 300.0, 30.0, 1.0) > base
    assert hawis_reward(0.10, 250.0, 30.0, 1.0) > base
    # a larger lambda penalises energy less
    assert hawis_reward(0.10, 300.0, 30.0, 2.0) > base


def test_amc_form_matches_its_definition():
    acc, flops = 71.5, 3.2e8
    expected = -(100 - acc) * 0.01 * math.log(flops)
    assert amc_reward((100 - acc) / 100, flops, 1.0, 1.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(error=0.1, energy=100.0, baseline_energy=10.0, lam=0.0),
    dict(error=0.1, energy=100.0, baseline_energy=10.0, lam=-1.0),
    dict(error=0.1, energy=0.0, baseline_energy=10.0, lam=1.0),
    dict(error=0.1, energy=100.0, baseline_energy=-10.0, lam=1.0),
    dict(error=1.5, energy=100.0, baseline_energy=10.0, lam=1.0),
    dict(error=-0.1, energy=100.0, baseline_energy=10.0, lam=1.0),
])
@pytest.mark.parametrize("name", REWARDS.names())
def test_every_reward_rejects_bad_input(name, kwargs):
    with pytest.raises(CimnasError):
        REWARDS.create(name, **kwargs)


@pytest.mark.parametrize("name", REWARDS.names())
def test_every_reward_is_finite_and_rewards_accuracy(name):
    r1 = REWARDS.create(name, error=0.2, energy=500.0, baseline_energy=30.0, lam=1.0)
    r2 = REWARDS.create(name, error=0.1, energy=500.0, baseline_energy=30.0, lam=1.0)
    assert math.isfinite(r1) and r2 > r1


def test_registry_names_and_unknown():
    assert {"hawis", "amc"} <= set(REWARDS.names())
    with pytest.raises(CimnasError, match="hawis"):
        REWARDS.get("nope")


def test_robust_accuracy_statistics():
    accs = [i / 100 for i in range(101)]  # 0.00 .. 1.00
    assert robust_accuracy(accs, "mean") == pytest.approx(0.5)
    assert robust_accuracy(accs, "p5") == pytest.approx(0.05)  # linear interpolation, exact here
    assert robust_accuracy(accs, "min") == 0.0
    # K = 4: 5th percentile interpolates between the two smallest: 0.8 + 0.15 * (0.9 - 0.8)
    assert robust_accuracy(np.array([0.9, 0.8, 0.95, 0.99]), "p5") == pytest.approx(0.815)
    assert robust_accuracy([0.7], "p5") == pytest.approx(0.7)


@pytest.mark.parametrize("accs,stat", [([], "mean"), ([0.5, 1.2], "mean"), ([0.5, float("nan")], "p5"),
                                       ([0.5], "median")])
def test_robust_accuracy_bad_input(accs, stat):
    with pytest.raises(CimnasError):
        robust_accuracy(accs, stat)


# Eq. 5 as R = -E log(Q/Q_b) + E log(lambda): raising lambda adds E * log(lambda), a bonus that grows
# with the error, so it weakens the pull to accuracy and strengthens the pull to low energy. Take a
# high-energy accurate candidate and a low-energy less accurate one (the usual trade-off):
HIGH = dict(error=0.05, energy=400.0, baseline_energy=50.0)
LOW = dict(error=0.20, energy=100.0, baseline_energy=50.0)
LAMS = (0.5, 1.0, 1.5, 2.0)


def test_larger_lambda_favours_the_low_energy_candidate_eq5():
    gaps = [hawis_reward(lam=lam, **LOW) - hawis_reward(lam=lam, **HIGH) for lam in LAMS]
    # by hand: the gap moves by (E_low - E_high) * log(lambda) = 0.15 log(lambda)
    g1 = -0.20 * math.log(2.0) + 0.05 * math.log(8.0)
    assert gaps == pytest.approx([g1 + 0.15 * math.log(lam) for lam in LAMS], rel=1e-12)
    assert gaps[1] < 0 < gaps[3]  # lambda 1 picks the accurate candidate, lambda 2 the cheap one (HAWIS-A)
    # with equal errors lambda cancels: only the energy ratio decides
    same = [hawis_reward(0.1, 100.0, 50.0, lam) - hawis_reward(0.1, 400.0, 50.0, lam) for lam in LAMS]
    assert same == pytest.approx([0.1 * math.log(4.0)] * len(LAMS), rel=1e-12)


@pytest.mark.parametrize("name", REWARDS.names())
def test_every_reward_moves_towards_low_energy_as_lambda_grows(name):
    gaps = [REWARDS.create(name, lam=lam, **LOW) - REWARDS.create(name, lam=lam, **HIGH) for lam in LAMS]
    assert all(b > a for a, b in zip(gaps[:-1], gaps[1:], strict=True))


def test_env_takes_its_reward_from_the_registry_by_name():
    from cimnas.search.env import EnvConfig, reward_from

    EnvConfig(reward="amc").validate()
    with pytest.raises(CimnasError, match="unknown search reward 'nope'.*hawis"):
        EnvConfig(reward="nope").validate()
    assert reward_from(0.1, 400.0, 50.0, 2.0, "amc") == amc_reward(0.1, 400.0, 50.0, 2.0)
    assert reward_from(0.1, 400.0, 50.0, 2.0) == hawis_reward(0.1, 400.0, 50.0, 2.0)
    assert reward_from(1.3, 400.0, 50.0, 2.0) == hawis_reward(1.0, 400.0, 50.0, 2.0)  # error clipped
