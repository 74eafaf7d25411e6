"""LSTM controller + REINFORCE (cimnas.search.agents.controller)."""

import math

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.search.agents import AGENTS, CONTROLLERS, make_controller, search_policies
from cimnas.search.agents.controller import LSTMController

SIZES = [3, 4, 3, 4]
OPT = [2, 1, 0, 3]


def _reward(d):
    return sum(int(a == b) for a, b in zip(d, OPT, strict=True)) / len(d)


def _p_opt(c):
    return math.prod(float(p[o]) for p, o in zip(c.probabilities(OPT), OPT, strict=True))


def test_learns_synthetic_optimum_better_than_uniform():
    c = LSTMController(SIZES, lr=0.03, batch_rollouts=5, seed=0)
    p0 = _p_opt(c)
    assert p0 == pytest.approx(1 / (3 * 4 * 3 * 4), rel=0.3)  # near-uniform at init
    rewards = []
    for _ in range(150):
        d = c.sample()
        rewards.append(_reward(d))
        c.observe(d, rewards[-1])
    uniform = sum(1 / s for s in SIZES) / len(SIZES)  # expected reward of uniform sampling = 0.29
    assert sum(rewards[-40:]) / 40 > uniform + 0.3
    assert _p_opt(c) > 20 * p0
    assert c.greedy() == OPT
    assert c.updates == 30


def test_seeded_sampling_and_resume_are_exact():
    a = LSTMController(SIZES, seed=3, batch_rollouts=3, entropy_weight=0.01)
    b = LSTMController(SIZES, seed=3, batch_rollouts=3, entropy_weight=0.01)
    seq_a = []
    for i in range(7):  # 7 = two updates + one pending rollout
        d = a.sample()
        seq_a.append(d)
        a.observe(d, _reward(d))
        if i == 6:
            state = a.state_dict()
    for d in seq_a:
        assert b.sample() == d
        b.observe(d, _reward(d))
    # restore a third controller from the state and continue: identical to `a`
    c = LSTMController(SIZES, seed=99, batch_rollouts=3, entropy_weight=0.01)
    c.load_state_dict(state)
    for _ in range(6):
        da, dc = a.sample(), c.sample()
        assert da == dc
        a.observe(da, _reward(da))
        c.observe(dc, _reward(dc))
    for pa, pc in zip(a.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pc)
    assert a.baseline == c.baseline


def test_state_dict_loads_with_weights_only(tmp_path):
    from cimnas.utils.io import load_checkpoint, save_checkpoint

    c = LSTMController(SIZES, batch_rollouts=2)
    for _ in range(3):
        d = c.sample()
        c.observe(d, 0.5)
    save_checkpoint(tmp_path / "c.pt", {"controller": c.state_dict()})
    d = LSTMController(SIZES, batch_rollouts=2)
    d.load_state_dict(load_checkpoint(tmp_path / "c.pt")["controller"])
    assert d.pending == c.pending and d.updates == 1
    with pytest.raises(CimnasError):
        LSTMController([3, 3]).load_state_dict(c.state_dict())


def test_reinforce_baseline_and_advantage():
    c = LSTMController([2], batch_rollouts=10, baseline_decay=0.5)
    c.observe([0], 1.0)  # the first reward sets the baseline: advantage 0
    c.observe([1], 0.0)  # advantage 0 - 1 = -1, baseline 0.5
    assert [a for _, a in c.pending] == [0.0, -1.0]
    assert c.baseline == pytest.approx(0.5)


def test_bad_arguments():
    with pytest.raises(CimnasError):
        LSTMController([])
    with pytest.raises(CimnasError):
        LSTMController([3], batch_rollouts=0)
    with pytest.raises(CimnasError):
        LSTMController([3], baseline_decay=1.0)


@pytest.mark.parametrize("name", CONTROLLERS.names())
def test_every_registered_controller_samples_valid_seeded_children_and_resumes(name, tmp_path):
    from cimnas.utils.io import load_checkpoint, save_checkpoint

    a = make_controller(name, SIZES, {"batch_rollouts": 2}, seed=4)
    b = make_controller(name, SIZES, {"batch_rollouts": 2}, seed=4)
    children = []
    for _ in range(5):  # two policy steps and one pending rollout
        d = a.sample()
        assert len(d) == len(SIZES) and all(0 <= x < s for x, s in zip(d, SIZES, strict=True))
        assert b.sample() == d
        children.append(d)
        a.observe(d, _reward(d))
        b.observe(d, _reward(d))
    assert len(a.greedy()) == len(SIZES)
    save_checkpoint(tmp_path / "c.pt", {"controller": a.state_dict()})
    resumed = make_controller(name, SIZES, {"batch_rollouts": 2}, seed=77)
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt")["controller"])
    for _ in range(4):
        da, dr = a.sample(), resumed.sample()
        assert da == dr
        assert a.observe(da, _reward(da)) == resumed.observe(dr, _reward(dr))


def test_search_policies_list_agents_and_controllers_by_kind():
    pols = search_policies()
    assert ("controller", "lstm") in pols and ("agent", "ddpg") in pols and ("agent", "random") in pols
    assert {n for k, n in pols if k == "agent"} == set(AGENTS.names())
    assert {n for k, n in pols if k == "controller"} == set(CONTROLLERS.names())


def test_make_controller_errors():
    with pytest.raises(CimnasError, match="lstm"):
        make_controller("gru", SIZES)
    with pytest.raises(CimnasError, match="controller.lstm.layers"):
        make_controller("lstm", SIZES, {"layers": 2})  # the key is num_layers
    with pytest.raises(CimnasError, match="temperature"):
        make_controller("lstm", SIZES, {"temperature": 0.0})
