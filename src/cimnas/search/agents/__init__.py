"""Search agents: they see state vectors and rewards only, never models or data.

Two kinds of search policy, one registry each, because their interfaces differ honestly:
- AGENTS (HAWIS): one continuous action in [0, 1] per layer step, from an Eq. 6 state vector;
  the episode's reward is spread over its transitions (`SearchAgent` below).
- CONTROLLERS (UAE / NACIM): a whole child as a list of categorical choices, no state vector;
  `sample() -> list[int]`, `greedy()`, `observe(decisions, reward) -> bool` (True when it took a
  policy step), `state_dict()` / `load_state_dict()` (`SearchController` below).
`search_policies()` lists every entry of both as (kind, name), kind "agent" or "controller".

API
---
- `AGENTS` registry: `ddpg` (layer-wise DDPG, `DDPGConfig`), `random` (uniform random search).
- `make_agent(name, state_dim, cfg_dict=None, seed=0)`: build one from a plain config mapping
  (unknown keys / wrong types / bad values -> CimnasError naming the key).
- `AGENT_CONFIGS[name]`: the config dataclass of each agent (for typed config sections).
- Every agent implements `SearchAgent`: `act(state, episode) -> float in [0, 1]`,
  `greedy(state)`, `observe_episode(states, actions, reward, next_states=None, dones=None)`,
  `observe(transitions, reward)`, `update() -> dict`, `state_dict()`, `load_state_dict(sd)`.
- `CONTROLLERS` registry: `lstm` (LSTM + REINFORCE, `LSTMControllerConfig`);
  `make_controller(name, decision_sizes, cfg_dict=None, seed=0)`; `CONTROLLER_CONFIGS[name]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from cimnas.config import from_dict, validate
from cimnas.registry import Registry
from cimnas.search.agents.controller import LSTMController, LSTMControllerConfig
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


class SearchController(Protocol):
    """What a controller-driven search (UAE) needs: whole children as categorical decisions."""

    decision_sizes: list[int]

    def sample(self) -> list[int]: ...

    def greedy(self) -> list[int]: ...

    def observe(self, decisions: list[int], reward: float) -> bool: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


CONTROLLERS = Registry("controller")
CONTROLLER_CONFIGS: dict[str, type] = {"lstm": LSTMControllerConfig}


@CONTROLLERS.register("lstm", "LSTM controller + REINFORCE with an EMA baseline (Zoph & Le; NACIM / UAE)")
def _make_lstm(decision_sizes: Sequence[int], cfg: LSTMControllerConfig, seed: int) -> LSTMController:
    return LSTMController(list(decision_sizes), hidden=cfg.hidden, num_layers=cfg.num_layers, lr=cfg.lr,
                          baseline_decay=cfg.baseline_decay, entropy_weight=cfg.entropy_weight,
                          batch_rollouts=cfg.batch_rollouts, temperature=cfg.temperature, seed=seed)


def make_controller(name: str, decision_sizes: Sequence[int], cfg_dict: dict[str, Any] | None = None,
                    seed: int = 0) -> SearchController:
    """Build controller `name` over `decision_sizes` with settings `cfg_dict` and `seed`."""
    builder = CONTROLLERS.get(name)  # unknown name -> CimnasError listing the valid ones
    cfg = from_dict(CONTROLLER_CONFIGS[name], dict(cfg_dict or {}), prefix=f"controller.{name}.")
    validate(cfg)
    return builder(decision_sizes, cfg, seed)


def search_policies() -> list[tuple[str, str]]:
    """Every registered search policy as (kind, name), kind "agent" or "controller"."""
    return [("agent", n) for n in AGENTS.names()] + [("controller", n) for n in CONTROLLERS.names()]


__all__ = ["AGENTS", "AGENT_CONFIGS", "CONTROLLERS", "CONTROLLER_CONFIGS", "DDPGAgent", "DDPGConfig",
           "LSTMController", "LSTMControllerConfig", "RandomAgent", "RandomConfig", "SearchAgent",
           "SearchController", "make_agent", "make_controller", "search_policies"]
