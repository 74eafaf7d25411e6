"""Random-search baseline agent with the same interface as the DDPG agent.

API
---
- `RandomAgent(state_dim, cfg=None, seed=0)`: `act(state, episode) -> float` uniform on [0, 1];
  `observe_episode(states, actions, reward, ...)` (counts episodes, keeps nothing else);
  `observe(transitions, reward)`; `update() -> {}`; `state_dict()` / `load_state_dict(sd)` hold the
  NumPy generator state so a resumed search draws the same actions as an uninterrupted one.
- `rng_state_to_str(rng)` / `rng_from_str(text)`: a numpy Generator's state as a JSON string (safe
  inside `weights_only=True` checkpoints), shared with the DDPG agent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cimnas.errors import CimnasError, check


def rng_state_to_str(rng: np.random.Generator) -> str:
    """The full state of a NumPy Generator as a JSON string."""
    return json.dumps(rng.bit_generator.state)


def rng_from_str(text: str) -> np.random.Generator:
    """A NumPy Generator restored from `rng_state_to_str` output."""
    try:
        state = json.loads(text)
        bitgen = getattr(np.random, state["bit_generator"])()
        bitgen.state = state
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise CimnasError("agent checkpoint holds a corrupt random-generator state; "
                          "delete the agent checkpoint to restart the search") from e
    return np.random.Generator(bitgen)


@dataclass
class RandomConfig:
    """The random agent has no settings; the class exists so every agent takes a config."""

    def validate(self) -> None:
        return None


class RandomAgent:
    """Random search: every action is drawn uniformly from [0, 1], independent of the state."""

    FORMAT = "cimnas-random-agent-v1"

    def __init__(self, state_dim: int, cfg: RandomConfig | None = None, seed: int = 0):
        check(state_dim >= 1, f"agent state_dim must be >= 1, got {state_dim}")
        self.state_dim = int(state_dim)
        self.cfg = cfg or RandomConfig()
        self.rng = np.random.default_rng(seed)
        self.episodes_seen = 0

    def act(self, state: np.ndarray, episode: int) -> float:
        return float(self.rng.random())

    def greedy(self, state: np.ndarray) -> float:
        """No policy to exploit: same as `act`."""
        return float(self.rng.random())

    def observe_episode(self, states: Sequence[np.ndarray] | np.ndarray, actions: Sequence[float],
                        reward: float, next_states=None, dones=None) -> float:
        check(len(states) == len(actions), "observe_episode needs one state per action")
        self.episodes_seen += 1
        return float(reward)

    def observe(self, transitions: Sequence[tuple], reward: float) -> float:
        self.episodes_seen += 1
        return float(reward)

    def update(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"format": self.FORMAT, "state_dim": self.state_dim,
                "rng": rng_state_to_str(self.rng), "episodes_seen": self.episodes_seen}

    def load_state_dict(self, sd: dict) -> None:
        check(isinstance(sd, dict) and sd.get("format") == self.FORMAT,
              f"agent checkpoint is not a random-agent state ({self.FORMAT}); "
              "was the search started with another agent?")
        self.rng = rng_from_str(sd["rng"])
        self.episodes_seen = int(sd["episodes_seen"])
