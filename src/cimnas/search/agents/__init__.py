"""Search agents: they see state vectors and rewards only, never models or data.

API
---
- `AGENTS` registry: `ddpg` (layer-wise DDPG, `DDPGConfig`), `random` (uniform random search).
- `make_agent(name, state_dim, cfg_dict=None, seed=0)`: build one from a plain config mapping
  (unknown keys / wrong types / bad values -> CimnasError naming the key).
- `AGENT_CONFIGS[name]`: the config dataclass of each agent (for typed config sections).
- Every agent implements `SearchAgent`: `act(state, episode) -> float in [0, 1]`,
  `greedy(state)`, `observe_episode(states, actions, reward, next_states=None, dones=None)`,
  `observe(transitions, reward)`, `update() -> dict`, `state_dict()`, `load_state_dict(sd)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from cimnas.config import from_dict, validate
from cimnas.registry import Registry
from cimnas.search.agents.ddpg import DDPGAgent, DDPGConfig
from cimnas.search.agents.random import RandomAgent, RandomConfig


class SearchAgent(Protocol):
    """What the search loop needs from an agent."""

    def act(self, state: np.ndarray, episode: int) -> float: ...

    def greedy(self, state: np.ndarray) -> float: ...

    def observe_episode(self, states: Sequence[np.ndarray] | np.ndarray, actions: Sequence[float],
                        reward: float, next_states=None, dones=None) -> float: ...

    def observe(self, transitions: Sequence[tuple], reward: float) -> float: ...

    def update(self) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, sd: dict) -> None: ...


AGENTS = Registry("agent")
AGENT_CONFIGS: dict[str, type] = {"ddpg": DDPGConfig, "random": RandomConfig}


@AGENTS.register("ddpg", "layer-wise DDPG (AMC/HAQ): actor-critic, replay, truncated-normal exploration")
def _make_ddpg(state_dim: int, cfg: DDPGConfig, seed: int) -> DDPGAgent:
    return DDPGAgent(state_dim, cfg, seed)


@AGENTS.register("random", "random search: uniform actions on [0, 1]")
def _make_random(state_dim: int, cfg: RandomConfig, seed: int) -> RandomAgent:
    return RandomAgent(state_dim, cfg, seed)


def make_agent(name: str, state_dim: int, cfg_dict: dict[str, Any] | None = None,
               seed: int = 0) -> SearchAgent:
    """Build agent `name` with settings `cfg_dict` (keys of its config dataclass) and `seed`."""
    builder = AGENTS.get(name)  # unknown name -> CimnasError listing the valid ones
    cfg = from_dict(AGENT_CONFIGS[name], dict(cfg_dict or {}), prefix=f"agent.{name}.")
    validate(cfg)
    return builder(state_dim, cfg, seed)


__all__ = ["AGENTS", "AGENT_CONFIGS", "DDPGAgent", "DDPGConfig", "RandomAgent", "RandomConfig",
           "SearchAgent", "make_agent"]
