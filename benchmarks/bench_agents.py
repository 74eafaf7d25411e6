"""HAWIS agents on the synthetic problem of tests/test_ddpg.py (6 layers, reward
-sum((a_l - a*_l)^2), optimum 0) with the *default* DDPG settings (AMC/HAQ: 300-300 nets,
lr 1e-4 / 1e-3, sigma decay 0.99, warm-up 20), against random search with the same episodes.

agents_ddpg_last50_reward / agents_random_last50_reward: mean reward of the last 50 of 300
    episodes, averaged over seeds 0-2 (random search's expectation is -1.022).
agents_ddpg_best_reward / agents_random_best_reward: best reward found, averaged over the seeds.
agents_ddpg_update_ms: milliseconds per DDPG gradient step (batch 64, default nets, CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run_all.py --only bench_agents
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time  # noqa: E402

from cimnas.search.agents import make_agent  # noqa: E402
from cimnas.search.spaces import LayerState, WidthSpace, build_states, episode_state  # noqa: E402

TARGET = np.array([0.2, 0.8, 0.5, 0.35, 0.9, 0.1])
SPACE = WidthSpace(base_widths=(16, 16, 32, 32, 64, 64))
TABLE = build_states([LayerState(i, i // 2, c // 2 if i else 3, c, 3, 1 + i % 2, 9 * c * c, 1024 // (i + 1))
                      for i, c in enumerate(SPACE.base_widths)])


def search(agent, episodes: int) -> np.ndarray:
    rewards = []
    for ep in range(episodes):
        states, actions, pa, pc = [], [], 0.0, 0
        for t in range(SPACE.n_steps):
            s = episode_state(TABLE, t, pa, pc, SPACE)
            a = agent.act(s, ep)
            states.append(s)
            actions.append(a)
            pa, pc = a, SPACE.channels(a, SPACE.base_widths[t])
        r = -float(np.sum((np.array(actions) - TARGET) ** 2))
        agent.observe_episode(states, actions, r)
        agent.update()
        rewards.append(r)
    return np.array(rewards)


def run(episodes: int = 300, seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    out: dict[str, float] = {}
    for name in ("ddpg", "random"):
        runs = [search(make_agent(name, TABLE.shape[1], {}, seed), episodes) for seed in seeds]
        out[f"agents_{name}_last50_reward"] = float(np.mean([r[-50:].mean() for r in runs]))
        out[f"agents_{name}_best_reward"] = float(np.mean([r.max() for r in runs]))
    agent = make_agent("ddpg", TABLE.shape[1], {"warmup_episodes": 1, "updates_per_episode": 1}, 0)
    search(agent, 12)  # fills the buffer past one batch
    out["agents_ddpg_update_ms"] = 1e3 * median_time(agent.update, repeats=50, warmup=5)
    return out


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k} = {v:.4g}")
