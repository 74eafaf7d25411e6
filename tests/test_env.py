"""HAWIS environment: phases, weight restoration, Eq. 5 reward, robustness-aware reward, states."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cimnas.data import load_dataset
from cimnas.errors import CimnasError
from cimnas.nn.counting import trace_layers
from cimnas.nn.supernet import SuperNet
from cimnas.search.env import EnvConfig, HawisEnv
from cimnas.search.spaces import WidthSpace
from cimnas.train import cycle_batches, n_batches


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", seed=0, limit=160, test_limit=60)


def _env(splits, **kw) -> HawisEnv:
    torch.manual_seed(0)
    net = SuperNet.build("mlp", in_channels=1, num_classes=10, image_size=8, r_min=0.5, r_max=2.0, d=4,
                         hidden_sizes=[16, 16], bn=True)
    space = WidthSpace(tuple(net.base_widths), r_min=0.5, r_max=2.0, d=4)
    assert net.max_widths == list(space.max_widths().widths)
    cfg = EnvConfig(batch_size=32, slimmable_epochs=0.5, candidate_epochs=0.5, bn_recal_batches=2, lam=0.5, **kw)
    geoms = trace_layers(net.model, (1, 8, 8))[:2]
    # energy by hand: the sum of the active widths (in uJ)
    return HawisEnv(net, space, splits, cfg, lambda m: {"energy_uj": float(sum(m.widths))}, 32.0,
                    layer_geoms=geoms, robust_fn=lambda m, seed: [0.5, 0.6, 0.7, 0.8])


def test_n_batches_fractional_and_capped():
    assert n_batches(100, 32, 1.0, None) == 4
    assert n_batches(100, 32, 0.3, None) == 2  # ceil(0.3 * 4)
    assert n_batches(100, 32, 3.0, 5) == 5
    assert n_batches(100, 32, 0.0, None) == 0


def test_cycle_batches_reshuffles_past_one_epoch(splits):
    g = torch.Generator().manual_seed(0)
    got = list(cycle_batches(splits.search_train, 64, 5, g))
    assert len(got) == 5


def test_reward_is_eq5_and_candidate_weights_are_restored(splits):
    env = _env(splits, slimmable_ft=False)
    before = {k: v.clone() for k, v in env.supernet.state_dict().items()}
    widths = [8, 24]
    res = env.run_episode(widths, seed=1)
    after = env.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # (b) never leaks into the super-net
    assert res.energy_uj == 32.0
    expected = -(1 - res.accuracy) * math.log((32.0 / 0.5) / 32.0)
    assert res.reward == pytest.approx(expected, rel=1e-9)
    assert res.times_s["slimmable_ft"] < res.times_s["candidate_ft"] + 1.0


def test_slimmable_phase_updates_super_net_and_is_seeded(splits):
    env1, env2 = _env(splits, candidate_ft=False), _env(splits, candidate_ft=False)
    before = {k: v.clone() for k, v in env1.supernet.state_dict().items()}
    r1 = env1.run_episode([12, 12], seed=5)
    r2 = env2.run_episode([12, 12], seed=5)
    changed = [k for k, v in env1.supernet.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed
    assert r1.accuracy == r2.accuracy and r1.reward == r2.reward
    sd1, sd2 = env1.supernet.state_dict(), env2.supernet.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_robust_reward_uses_p5_of_monte_carlo_accuracies(splits):
    env = _env(splits, slimmable_ft=False, candidate_ft=False, reward_accuracy="mc_p5")
    res = env.run_episode([8, 8], seed=0)
    p5 = float(np.percentile([0.5, 0.6, 0.7, 0.8], 5))
    assert res.reward_accuracy == pytest.approx(p5)
    assert res.reward == pytest.approx(-(1 - p5) * math.log((16.0 / 0.5) / 32.0))
    assert res.robust["mean"] == pytest.approx(0.65)


def test_states_are_normalised_eq6(splits):
    env = _env(splits)
    s0 = env.state(0, 0.0, 0)
    s1 = env.state(1, 0.7, 24)
    assert s0.shape == (10,) and s1.shape == (10,)
    assert np.all((s1 >= 0) & (s1 <= 1))
    assert s1[8] == pytest.approx(0.7)
    assert s1[0] == 1.0 and s0[0] == 0.0  # layer index min-max normalised


@pytest.mark.parametrize("kw, match", [
    ({"lam": 0.0}, "lambda"), ({"lam": 300.0}, "lam must be <="), ({"slimmable_lr": 0.0}, "slimmable_lr"),
    ({"candidate_lr": 11.0}, "candidate_lr"), ({"momentum": 1.0}, "momentum"), ({"reg_coef": 2.0}, "reg_coef"),
    ({"candidate_epochs": 1e4}, "epochs"), ({"eval_max_batches": 0}, "eval_max_batches"),
])
def test_env_config_ranges(kw, match):
    with pytest.raises(CimnasError, match=match):
        EnvConfig(**kw).validate()


def test_phases_train_through_the_shared_driver(splits, monkeypatch):
    import cimnas.search.env as env_mod

    seen = []
    real = env_mod.train_steps
    monkeypatch.setattr(env_mod, "train_steps", lambda *a, **k: seen.append(k["total"]) or real(*a, **k))
    env = _env(splits)
    env.run_episode([12, 12], seed=2)
    n = n_batches(len(splits.search_train), 32, 0.5, None)
    assert seen == [n, n]  # phase (a), then phase (b)


def test_bad_lambda_and_missing_defect_model(splits):
    with pytest.raises(CimnasError, match="lambda"):
        EnvConfig(lam=0.0).validate()
    env = _env(splits)
    with pytest.raises(CimnasError, match="defect"):
        HawisEnv(env.supernet, env.space, splits, EnvConfig(reward_accuracy="mc_mean"), lambda m: {"energy_uj": 1.0},
                 1.0)


def test_inplace_distill_puts_the_largest_first_as_teacher(splits):
    env = _env(splits, candidate_ft=False, inplace_distill=True)
    calls = []
    orig = env.supernet.slimmable_step

    def spy(x, y, widths_list, opt, reg=None, distill=False):
        calls.append(([list(w) for w in widths_list], distill))
        return orig(x, y, widths_list, opt, reg, distill=distill)

    env.supernet.slimmable_step = spy
    env.run_episode([12, 12], seed=5)
    assert calls and all(d and len(w) == 5 and w[0] == env.supernet.largest() and w[1] == [12, 12]
                         for w, d in calls)
