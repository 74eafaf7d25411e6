"""DDPG and random agents: determinism, resume, warm-up, baseline, and a synthetic problem with a
known optimum on which DDPG must beat random search."""

import numpy as np
import pytest
import torch
from scipy.stats import truncnorm

from cimnas.errors import CimnasError
from cimnas.search.agents import AGENTS, DDPGAgent, DDPGConfig, RandomAgent, make_agent
from cimnas.search.agents.ddpg import truncated_normal
from cimnas.search.spaces import LayerState, WidthSpace, build_states, episode_state
from cimnas.utils.io import load_checkpoint, save_checkpoint

# Synthetic problem: 6 layers, reward -sum((a_l - a*_l)^2), optimum 0 at a = TARGET.
TARGET = np.array([0.2, 0.8, 0.5, 0.35, 0.9, 0.1])
SPACE = WidthSpace(base_widths=(16, 16, 32, 32, 64, 64))
TABLE = build_states([LayerState(i, i // 2, c // 2 if i else 3, c, 3, 1 + i % 2, 9 * c * c, 1024 // (i + 1))
                      for i, c in enumerate(SPACE.base_widths)])
SMALL = dict(hidden_actor=[64, 64], hidden_critic=[64, 64], lr_actor=1e-3, sigma_decay=0.95)


def run_episode(agent, episode):
    states, actions, pa, pc = [], [], 0.0, 0
    for t in range(SPACE.n_steps):
        s = episode_state(TABLE, t, pa, pc, SPACE)
        a = agent.act(s, episode)
        assert 0.0 <= a <= 1.0
        states.append(s)
        actions.append(a)
        pa, pc = a, SPACE.channels(a, SPACE.base_widths[t])
    reward = -float(np.sum((np.array(actions) - TARGET) ** 2))
    agent.observe_episode(states, actions, reward)
    agent.update()
    return actions, reward


def search(agent, episodes, start=0):
    return [run_episode(agent, ep) for ep in range(start, start + episodes)]


def test_ddpg_beats_random_search_on_synthetic_problem():
    episodes = 200
    agent = make_agent("ddpg", 10, SMALL, seed=0)
    ddpg = np.array([r for _, r in search(agent, episodes)])
    rand = np.array([r for _, r in search(make_agent("random", 10, {}, seed=0), episodes)])
    # Random search: E[R] = -sum(t^2 - t + 1/3) = -1.022, per-episode std ~0.35, so the mean of 50
    # episodes is within +-0.15 of it (3 sigma). Measured (seed 0): DDPG -0.15, random -1.04.
    assert rand[-50:].mean() == pytest.approx(-1.022, abs=0.15)
    assert ddpg[-50:].mean() > rand[-50:].mean() + 0.5
    assert ddpg[-50:].mean() > -0.45
    # the greedy policy alone is far better than random (measured -0.29 at seed 0; random: -1.02)
    pa, pc, greedy = 0.0, 0, []
    for t in range(SPACE.n_steps):
        a = agent.greedy(episode_state(TABLE, t, pa, pc, SPACE))
        greedy.append(a)
        pa, pc = a, SPACE.channels(a, SPACE.base_widths[t])
    assert -float(np.sum((np.array(greedy) - TARGET) ** 2)) > -0.45


@pytest.mark.parametrize("name", AGENTS.names())
def test_every_agent_resumes_identically(name, tmp_path):
    cfg = dict(SMALL, warmup_episodes=5, batch_size=16) if name == "ddpg" else {}
    agent = make_agent(name, 10, cfg, seed=7)
    search(agent, 12)  # past warm-up: networks, buffer, baseline and RNGs all in use
    save_checkpoint(tmp_path / "agent.pt", {"agent": agent.state_dict()})
    continued = search(agent, 6, start=12)
    resumed = make_agent(name, 10, cfg, seed=123)  # a different seed: everything must come from the file
    resumed.load_state_dict(load_checkpoint(tmp_path / "agent.pt")["agent"])
    assert search(resumed, 6, start=12) == continued  # exact equality of actions and rewards


def test_state_dict_is_a_snapshot():
    agent = DDPGAgent(10, DDPGConfig(**SMALL, warmup_episodes=2, batch_size=8), seed=1)
    search(agent, 4)
    sd = agent.state_dict()
    before = sd["actor"]["out.weight"].clone()
    search(agent, 3, start=4)
    assert torch.equal(sd["actor"]["out.weight"], before)
    assert not torch.equal(agent.actor.state_dict()["out.weight"], before)


def test_same_seed_same_search_different_seed_differs():
    cfg = dict(SMALL, warmup_episodes=3, batch_size=8)
    a = search(make_agent("ddpg", 10, cfg, seed=5), 8)
    b = search(make_agent("ddpg", 10, cfg, seed=5), 8)
    c = search(make_agent("ddpg", 10, cfg, seed=6), 8)
    assert a == b and a != c


def test_no_global_rng_is_touched():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    search(make_agent("ddpg", 10, dict(SMALL, warmup_episodes=2, batch_size=8), seed=0), 5)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)


def test_warmup_is_uniform_and_does_not_update():
    agent = DDPGAgent(10, DDPGConfig(**SMALL, warmup_episodes=5000), seed=2)
    acts = [agent.act(TABLE[0], ep) for ep in range(2000)]
    # U(0,1): mean 0.5 +- 4 * sqrt(1/12/2000) = 0.026; fraction below 0.25 in 0.25 +- 4 * 0.0097
    assert np.mean(acts) == pytest.approx(0.5, abs=0.026)
    assert np.mean(np.array(acts) < 0.25) == pytest.approx(0.25, abs=0.039)
    w0 = agent.actor.out.weight.clone()
    agent.observe_episode([TABLE[0], TABLE[1]], [0.3, 0.4], -1.0)
    assert agent.update() == {}
    assert torch.equal(agent.actor.out.weight, w0)


def test_updates_after_warmup_and_soft_targets():
    cfg = DDPGConfig(**SMALL, warmup_episodes=2, batch_size=4, tau=0.01)
    agent = DDPGAgent(10, cfg, seed=3)
    search(agent, 1)  # update() is a no-op after 1 of 2 warm-up episodes
    assert agent.n_updates == 0
    search(agent, 1, start=1)
    assert agent.n_updates == SPACE.n_steps  # default: one gradient step per transition
    # soft update: the target moved towards the actor but is not equal to it
    t, s = agent.actor_target.out.weight, agent.actor.out.weight
    assert not torch.equal(t, s)
    full = DDPGAgent(10, DDPGConfig(**SMALL, warmup_episodes=1, batch_size=4, tau=1.0), seed=3)
    search(full, 2)
    assert torch.equal(full.actor_target.out.weight, full.actor.out.weight)


def test_moving_average_baseline_by_hand():
    agent = DDPGAgent(10, DDPGConfig(**SMALL, baseline_alpha=0.5), seed=0)
    states = [TABLE[0], TABLE[1]]
    assert agent.observe_episode(states, [0.1, 0.2], 1.0) == 0.0  # baseline starts at the first reward
    assert agent.observe_episode(states, [0.1, 0.2], 3.0) == 2.0  # 3 - 1; baseline -> 1 + 0.5 * 2 = 2
    assert agent.baseline == 2.0
    assert agent.observe_episode(states, [0.1, 0.2], 2.0) == 0.0
    # every transition of an episode stores the episode's raw reward; only the last step is terminal
    np.testing.assert_array_equal(agent.buffer.r[:6, 0], [1, 1, 3, 3, 2, 2])
    np.testing.assert_array_equal(agent.buffer.done[:2, 0], [0, 1])
    np.testing.assert_array_equal(agent.buffer.s2[0], TABLE[1].astype(np.float32))
    assert agent.buffer.capacity == 128 * 2  # replay_per_step x steps of the first episode


def test_critic_target_subtracts_the_current_baseline_from_the_sampled_batch():
    agent = DDPGAgent(10, DDPGConfig(**SMALL, baseline_alpha=0.5, discount=0.5, warmup_episodes=1), seed=0)
    states = [TABLE[0], TABLE[1]]
    for r in (1.0, 3.0, 2.0, 6.0):  # baseline: 1 -> 2 -> 2 -> 4
        agent.observe_episode(states, [0.1, 0.2], r)
    assert agent.baseline == 4.0
    s, a, r, s2, done = agent.buffer.sample(16, np.random.default_rng(0))
    with torch.no_grad():
        bootstrap = agent.critic_target(s2, agent.actor_target(s2))
    expected = (r - 4.0) + 0.5 * (1.0 - done) * bootstrap  # r - b of *now*, not of each episode's day
    torch.testing.assert_close(agent.critic_targets(r, s2, done), expected)
    assert set(r[:, 0].tolist()) <= {1.0, 3.0, 2.0, 6.0}  # raw rewards come out of the buffer


def test_critic_ranks_actions_under_steadily_rising_rewards():
    """One-step episodes whose action (and reward R = a) rises steadily, as when a policy improves.
    Advantages frozen at observe time would all equal the baseline's constant lag (2/59 here), so a
    critic fitted to them is flat in a; against the current baseline it learns Q(a) = a - b."""
    cfg = dict(SMALL, warmup_episodes=1, baseline_alpha=0.5, updates_per_episode=400, lr_actor=1e-6)
    agent = DDPGAgent(10, DDPGConfig(**cfg), seed=0)
    s = TABLE[2]
    for k in range(60):
        agent.observe_episode([s], [k / 59], k / 59)
    agent.update()
    with torch.no_grad():
        st = torch.as_tensor(np.stack([s, s]), dtype=torch.float32)
        q = agent.critic(st, torch.tensor([[0.9], [0.1]])).ravel()
    # the true slope is 1, so Q(0.9) - Q(0.1) = 0.8; a flat critic gives ~0
    assert float(q[0] - q[1]) > 0.4


def test_sigma_schedule():
    agent = DDPGAgent(10, DDPGConfig(**dict(SMALL, sigma_decay=0.9), warmup_episodes=20, min_sigma=0.01), seed=0)
    assert agent.sigma(20) == 0.5
    assert agent.sigma(30) == pytest.approx(0.5 * 0.9**10)
    assert agent.sigma(500) == 0.01


@pytest.mark.parametrize("mu,sigma", [(0.5, 0.2), (0.9, 0.3), (0.05, 0.5)])
def test_truncated_normal_matches_scipy(mu, sigma):
    rng = np.random.default_rng(0)
    x = np.array([truncated_normal(mu, sigma, rng) for _ in range(4000)])
    dist = truncnorm((0 - mu) / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    assert x.min() >= 0 and x.max() <= 1
    assert x.mean() == pytest.approx(dist.mean(), abs=4 * dist.std() / np.sqrt(len(x)))
    assert truncated_normal(0.3, 0.0, rng) == 0.3
    assert truncated_normal(0.999999, 1e-9, rng) <= 1.0


def test_make_agent_errors():
    with pytest.raises(CimnasError, match="ddpg"):
        make_agent("ppo", 10)
    with pytest.raises(CimnasError, match="agent.ddpg.learning_rate"):
        make_agent("ddpg", 10, {"learning_rate": 1e-3})
    with pytest.raises(CimnasError, match="tau"):
        make_agent("ddpg", 10, {"tau": 0.0})
    with pytest.raises(CimnasError, match="expected a number"):
        make_agent("ddpg", 10, {"lr_actor": "fast"})


def test_load_state_dict_rejects_foreign_or_mismatched_states():
    ddpg, rand = DDPGAgent(10, DDPGConfig(**SMALL)), RandomAgent(10)
    with pytest.raises(CimnasError, match="another agent"):
        ddpg.load_state_dict(rand.state_dict())
    with pytest.raises(CimnasError, match="another agent"):
        rand.load_state_dict(ddpg.state_dict())
    with pytest.raises(CimnasError, match="state_dim"):
        DDPGAgent(9, DDPGConfig(**SMALL)).load_state_dict(ddpg.state_dict())
    with pytest.raises(CimnasError, match="other DDPG settings"):
        DDPGAgent(10, DDPGConfig(**dict(SMALL, tau=0.5))).load_state_dict(ddpg.state_dict())
    with pytest.raises(CimnasError, match="expects 10"):
        ddpg.greedy(np.zeros(9))
