"""Layer-wise DDPG agent for the HAWIS width search (AMC / HAQ style).

API
---
- `DDPGConfig`: every hyper-parameter, defaults from AMC/HAQ (REFERENCE-FACTS.md); `validate()`.
- `agent = DDPGAgent(state_dim, cfg, seed)`.
- `agent.act(state, episode) -> float in [0, 1]`: uniform random while
  `episode < cfg.warmup_episodes`, else the actor's output plus truncated-normal noise on [0, 1]
  with sigma = init_sigma * sigma_decay ** (episode - warmup_episodes) (floored at min_sigma).
- `agent.greedy(state) -> float`: the actor's output without noise.
- `agent.observe_episode(states, actions, reward, next_states=None, dones=None) -> float`: store
  one episode's transitions (s_t, a_t, s_{t+1}, done_t), each with the episode's *raw* final reward,
  and move the moving-average baseline; returns the reward minus the baseline it met (for logs).
  By default s_{t+1} = states[t+1] and only the last step is terminal.
  `agent.observe(transitions, reward)` takes `(s, a, s_next, done)` tuples instead.
- `agent.update() -> dict`: `updates_per_episode` gradient steps (default: one per transition of the
  last episode) on mini-batches from the replay buffer, once `warmup_episodes` episodes have been
  observed; the *current* baseline is subtracted from each sampled batch's rewards (as AMC does),
  so an old episode is judged against today's reward level, not the one it met; returns mean
  losses ({} when it did nothing). `agent.critic_targets(r, s2, done)` is that Bellman target.
- `agent.state_dict()` / `agent.load_state_dict(sd)`: networks, target networks, optimisers, replay
  buffer, baseline, counters and both RNG states (NumPy + torch), as tensors / numbers / strings
  that `cimnas.utils.io.save_checkpoint` can store; a restored agent continues bit-identically.

One episode in the environment (sketch)::

    for t in range(space.n_steps):
        s = episode_state(table, t, prev_a, prev_c, space); a = agent.act(s, episode)
    agent.observe_episode(states, actions, reward); agent.update()

All randomness comes from the seed: a NumPy Generator (warm-up actions, exploration noise,
mini-batch sampling) and a torch.Generator (network initialisation); no global RNG is touched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.special import ndtr, ndtri
from torch import nn

from cimnas.errors import check
from cimnas.search.agents.random import rng_from_str, rng_state_to_str
from cimnas.utils.seed import make_generator


@dataclass
class DDPGConfig:
    """DDPG hyper-parameters. Defaults: AMC (He et al. 2018) / HAQ (Wang et al. 2019)."""

    hidden_actor: list[int] = field(default_factory=lambda: [300, 300])  # actor: s -> 300 -> 300 -> 1
    hidden_critic: list[int] = field(default_factory=lambda: [300, 300])  # (fc(s)+fc(a)) -> 300 -> 1
    lr_actor: float = 1e-4  # Adam learning rate of the actor
    lr_critic: float = 1e-3  # Adam learning rate of the critic
    tau: float = 0.01  # soft target update: theta' <- tau theta + (1 - tau) theta'
    discount: float = 1.0  # Bellman discount (every transition holds the final reward)
    batch_size: int = 64  # mini-batch of transitions per gradient step
    replay_size: int = 0  # replay capacity in transitions; 0 = replay_per_step * steps per episode
    replay_per_step: int = 128  # AMC/HAQ: ~128 x n_layers transitions
    warmup_episodes: int = 20  # uniform random actions, no updates (HAQ 20, AMC 100)
    init_sigma: float = 0.5  # exploration std at the first episode after warm-up
    sigma_decay: float = 0.99  # per-episode decay of sigma (HAQ 0.99, AMC 0.95)
    min_sigma: float = 0.0  # floor of the exploration std
    baseline_alpha: float = 0.5  # moving-average reward baseline: b <- b + alpha (R - b)
    updates_per_episode: int = 0  # gradient steps per update(); 0 = transitions of the last episode
    init_w: float = 3e-3  # output layers initialised in U(-init_w, init_w)

    def validate(self) -> None:
        check(len(self.hidden_actor) >= 1 and all(h >= 1 for h in self.hidden_actor),
              "ddpg.hidden_actor must list positive layer sizes, e.g. [300, 300]")
        check(len(self.hidden_critic) >= 1 and all(h >= 1 for h in self.hidden_critic),
              "ddpg.hidden_critic must list positive layer sizes, e.g. [300, 300]")
        check(self.lr_actor > 0 and self.lr_critic > 0, "ddpg learning rates must be > 0")
        check(0 < self.tau <= 1, f"ddpg.tau must be in (0, 1], got {self.tau}")
        check(0 <= self.discount <= 1, f"ddpg.discount must be in [0, 1], got {self.discount}")
        check(self.batch_size >= 1, f"ddpg.batch_size must be >= 1, got {self.batch_size}")
        check(self.replay_size >= 0 and self.replay_per_step >= 1,
              "ddpg.replay_size must be >= 0 (0 = automatic) and replay_per_step >= 1")
        check(self.warmup_episodes >= 0, "ddpg.warmup_episodes must be >= 0")
        check(self.init_sigma >= 0 and self.min_sigma >= 0, "ddpg exploration sigmas must be >= 0")
        check(0 < self.sigma_decay <= 1, f"ddpg.sigma_decay must be in (0, 1], got {self.sigma_decay}")
        check(0 < self.baseline_alpha <= 1, "ddpg.baseline_alpha must be in (0, 1]")
        check(self.updates_per_episode >= 0, "ddpg.updates_per_episode must be >= 0 (0 = automatic)")
        check(self.init_w > 0, "ddpg.init_w must be > 0")


def _linear(n_in: int, n_out: int, gen: torch.Generator, bound: float | None = None) -> nn.Linear:
    """nn.Linear initialised from `gen` (fan-in uniform as in AMC; `bound` for output layers)."""
    layer = torch.nn.utils.skip_init(nn.Linear, n_in, n_out)  # no draw from the global RNG
    b = bound if bound is not None else 1.0 / np.sqrt(n_in)
    with torch.no_grad():
        layer.weight.uniform_(-b, b, generator=gen)
        layer.bias.uniform_(-b, b, generator=gen)
    return layer


class Actor(nn.Module):
    """mu(s): state -> hidden (ReLU) ... -> 1, sigmoid, so actions lie in [0, 1]."""

    def __init__(self, state_dim: int, hidden: Sequence[int], gen: torch.Generator, init_w: float):
        super().__init__()
        sizes = [state_dim, *hidden]
        self.hidden = nn.ModuleList(_linear(a, b, gen) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.out = _linear(sizes[-1], 1, gen, init_w)

    def forward(self, s: torch.Tensor) -> torch.Tensor:  # (B, state_dim) -> (B, 1)
        for fc in self.hidden:
            s = torch.relu(fc(s))
        return torch.sigmoid(self.out(s))


class Critic(nn.Module):
    """Q(s, a) = fc_out(relu(... relu(fc_s(s) + fc_a(a)) ...)) (AMC/HAQ critic)."""

    def __init__(self, state_dim: int, hidden: Sequence[int], gen: torch.Generator, init_w: float):
        super().__init__()
        self.fc_s = _linear(state_dim, hidden[0], gen)
        self.fc_a = _linear(1, hidden[0], gen)
        self.hidden = nn.ModuleList(_linear(a, b, gen) for a, b in zip(hidden[:-1], hidden[1:], strict=True))
        self.out = _linear(hidden[-1], 1, gen, init_w)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:  # -> (B, 1)
        h = torch.relu(self.fc_s(s) + self.fc_a(a))
        for fc in self.hidden:
            h = torch.relu(fc(h))
        return self.out(h)


class ReplayBuffer:
    """Ring buffer of (s, a, r, s', done) transitions in NumPy arrays."""

    def __init__(self, state_dim: int, capacity: int):
        self.capacity = int(capacity)
        self.s = np.zeros((capacity, state_dim), np.float32)
        self.a = np.zeros((capacity, 1), np.float32)
        self.r = np.zeros((capacity, 1), np.float32)
        self.s2 = np.zeros((capacity, state_dim), np.float32)
        self.done = np.zeros((capacity, 1), np.float32)
        self.ptr = 0
        self.size = 0

    def add(self, s, a: float, r: float, s2, done: bool) -> None:
        i = self.ptr
        self.s[i], self.a[i, 0], self.r[i, 0], self.s2[i], self.done[i, 0] = s, a, r, s2, float(done)
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size, size=n)
        return tuple(torch.from_numpy(x[idx]) for x in (self.s, self.a, self.r, self.s2, self.done))

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "ptr": self.ptr, "size": self.size,
                **{k: torch.from_numpy(getattr(self, k).copy()) for k in ("s", "a", "r", "s2", "done")}}

    @classmethod
    def from_state_dict(cls, sd: dict) -> ReplayBuffer:
        buf = cls(int(sd["s"].shape[1]), int(sd["capacity"]))
        for k in ("s", "a", "r", "s2", "done"):
            getattr(buf, k)[...] = sd[k].detach().cpu().numpy()  # cpu: map_location may differ
        buf.ptr, buf.size = int(sd["ptr"]), int(sd["size"])
        return buf


def truncated_normal(mu: float, sigma: float, rng: np.random.Generator, lo: float = 0.0,
                     hi: float = 1.0) -> float:
    """One draw of N(mu, sigma^2) truncated to [lo, hi], by inverting the normal CDF."""
    if sigma <= 0:
        return float(min(max(mu, lo), hi))
    p_lo, p_hi = ndtr((lo - mu) / sigma), ndtr((hi - mu) / sigma)
    x = mu + sigma * ndtri(p_lo + rng.random() * (p_hi - p_lo))
    if not np.isfinite(x):  # p at 0 or 1 in float64: fall back to the nearer bound
        x = lo if x < 0 else hi
    return float(min(max(x, lo), hi))


class DDPGAgent:
    """Deep deterministic policy gradient agent choosing one action per layer (HAWIS Sec. III-B).

    Critic target (Bellman): y = (r - b) + discount * (1 - done) * Q'(s', mu'(s')); actor loss
    -Q(s, mu(s)); targets follow with soft updates of rate tau. r is the episode's raw final reward
    (Eq. 5), stored in every transition of that episode; b is the moving-average baseline *at update
    time*. Storing r - b at observe time instead would freeze each episode's advantage against the
    baseline of its day: under steadily rising rewards all stored advantages settle to the same lag
    and the critic could no longer tell good from bad episodes (issue 12). AMC moves its average
    with each sampled batch's mean; here it moves with each episode's reward (b <- b + alpha (R - b)),
    which follows the newest rewards; both subtract it from the sampled batch.
    """

    FORMAT = "cimnas-ddpg-agent-v2"  # v2: the replay buffer holds raw rewards (v1: r - b at observe time)

    def __init__(self, state_dim: int, cfg: DDPGConfig | None = None, seed: int = 0):
        check(state_dim >= 1, f"agent state_dim must be >= 1, got {state_dim}")
        self.cfg = cfg or DDPGConfig()
        self.cfg.validate()
        self.state_dim = int(state_dim)
        self.rng = np.random.default_rng(seed)
        self.gen = make_generator(seed)
        c = self.cfg
        self.actor = Actor(state_dim, c.hidden_actor, self.gen, c.init_w)
        self.critic = Critic(state_dim, c.hidden_critic, self.gen, c.init_w)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=c.lr_actor)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=c.lr_critic)
        self.buffer: ReplayBuffer | None = None  # allocated on the first episode (size from L-1)
        self.baseline: float | None = None
        self.episodes_seen = 0
        self.last_episode_len = 0
        self.n_updates = 0

    # ---- acting -------------------------------------------------------------------------------
    def sigma(self, episode: int) -> float:
        """Exploration std at `episode` (after warm-up)."""
        c = self.cfg
        return max(c.min_sigma, c.init_sigma * c.sigma_decay ** max(0, episode - c.warmup_episodes))

    def greedy(self, state: np.ndarray) -> float:
        """The actor's action mu(s) in [0, 1], without exploration noise."""
        with torch.no_grad():
            s = torch.as_tensor(np.asarray(state, np.float32)).reshape(1, -1)
            check(s.shape[1] == self.state_dim,
                  f"state has {s.shape[1]} entries, the agent expects {self.state_dim}")
            return float(self.actor(s)[0, 0])

    def act(self, state: np.ndarray, episode: int) -> float:
        """Action for `state` at `episode`: uniform during warm-up, else mu(s) + truncated noise."""
        if episode < self.cfg.warmup_episodes:
            return float(self.rng.random())
        return truncated_normal(self.greedy(state), self.sigma(episode), self.rng)

    # ---- storing experience -------------------------------------------------------------------
    def _move_baseline(self, reward: float) -> float:
        """Move the moving-average baseline towards `reward`; returns reward minus the old baseline."""
        if self.baseline is None:
            self.baseline = float(reward)
        adv = float(reward) - self.baseline
        self.baseline += self.cfg.baseline_alpha * (float(reward) - self.baseline)
        return adv

    def _ensure_buffer(self, steps: int) -> None:
        if self.buffer is None:
            cap = self.cfg.replay_size or self.cfg.replay_per_step * max(1, steps)
            self.buffer = ReplayBuffer(self.state_dim, cap)

    def observe(self, transitions: Sequence[tuple], reward: float) -> float:
        """Store `(s, a, s_next, done)` tuples of one episode with its final `reward`."""
        check(len(transitions) >= 1, "an episode needs at least one transition")
        self._ensure_buffer(len(transitions))
        for s, _, s2, _ in transitions:  # check all before storing any
            check(np.asarray(s).size == self.state_dim and np.asarray(s2).size == self.state_dim,
                  f"transition states must have {self.state_dim} entries")
        adv = self._move_baseline(reward)
        for s, a, s2, done in transitions:
            self.buffer.add(np.asarray(s, np.float32).ravel(), float(a), float(reward),
                            np.asarray(s2, np.float32).ravel(), bool(done))
        self.episodes_seen += 1
        self.last_episode_len = len(transitions)
        return adv

    def observe_episode(self, states: Sequence[np.ndarray] | np.ndarray, actions: Sequence[float],
                        reward: float, next_states: Sequence[np.ndarray] | None = None,
                        dones: Sequence[bool] | None = None) -> float:
        """Store one episode: states[t] and actions[t] for t < T, and the final reward.

        Default next_states: states[t+1] (the last one repeats states[-1], unused since done);
        default dones: only the last step. Returns the reward minus the baseline it met.
        """
        T = len(actions)
        check(T >= 1 and len(states) == T, f"got {len(states)} states for {T} actions; give one per action")
        if next_states is None:
            next_states = [states[t + 1] for t in range(T - 1)] + [states[T - 1]]
        if dones is None:
            dones = [False] * (T - 1) + [True]
        check(len(next_states) == T and len(dones) == T, "next_states and dones need one entry per action")
        return self.observe(list(zip(states, actions, next_states, dones, strict=True)), reward)

    # ---- learning -----------------------------------------------------------------------------
    def _soft_update(self, target: nn.Module, source: nn.Module) -> None:
        with torch.no_grad():
            for pt, p in zip(target.parameters(), source.parameters(), strict=True):
                pt.mul_(1.0 - self.cfg.tau).add_(p, alpha=self.cfg.tau)

    def critic_targets(self, r: torch.Tensor, s2: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Bellman targets of a sampled batch: (r - current baseline) + discount (1 - done) Q'(s', mu'(s'))."""
        b = 0.0 if self.baseline is None else self.baseline
        with torch.no_grad():
            return (r - b) + self.cfg.discount * (1.0 - done) * self.critic_target(s2, self.actor_target(s2))

    def update(self) -> dict:
        """Gradient steps on replayed mini-batches; nothing during warm-up or with an empty buffer."""
        c = self.cfg
        if self.buffer is None or self.buffer.size == 0 or self.episodes_seen < max(1, c.warmup_episodes):
            return {}
        steps = c.updates_per_episode or max(1, self.last_episode_len)
        closs = aloss = 0.0
        for _ in range(steps):
            s, a, r, s2, done = self.buffer.sample(c.batch_size, self.rng)
            y = self.critic_targets(r, s2, done)
            q_loss = nn.functional.mse_loss(self.critic(s, a), y)
            self.critic_optim.zero_grad()
            q_loss.backward()
            self.critic_optim.step()
            a_loss = -self.critic(s, self.actor(s)).mean()
            self.actor_optim.zero_grad()
            a_loss.backward()
            self.actor_optim.step()
            self._soft_update(self.actor_target, self.actor)
            self._soft_update(self.critic_target, self.critic)
            closs += q_loss.item()
            aloss += a_loss.item()
            self.n_updates += 1
        return {"critic_loss": closs / steps, "actor_loss": aloss / steps, "steps": steps}

    # ---- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A deep copy of everything needed to continue identically (checkpoint-safe types)."""
        sd = {
            "format": self.FORMAT, "state_dim": self.state_dim, "config": asdict(self.cfg),
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optim": self.actor_optim.state_dict(), "critic_optim": self.critic_optim.state_dict(),
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "baseline": self.baseline, "episodes_seen": self.episodes_seen,
            "last_episode_len": self.last_episode_len, "n_updates": self.n_updates,
            "rng": rng_state_to_str(self.rng), "torch_gen": self.gen.get_state(),
        }
        return copy.deepcopy(sd)

    def load_state_dict(self, sd: dict) -> None:
        """Restore from `state_dict()` output (e.g. read back with `load_checkpoint`)."""
        check(not (isinstance(sd, dict) and sd.get("format") == "cimnas-ddpg-agent-v1"),
              "agent checkpoint is from an older cimnas whose replay buffer held baseline-subtracted "
              "rewards; start the search afresh")
        check(isinstance(sd, dict) and sd.get("format") == self.FORMAT,
              f"agent checkpoint is not a DDPG-agent state ({self.FORMAT}); "
              "was the search started with another agent?")
        check(int(sd["state_dim"]) == self.state_dim,
              f"agent checkpoint has state_dim {sd['state_dim']}, this search uses {self.state_dim}")
        check(sd["config"] == asdict(self.cfg),
              "agent checkpoint was made with other DDPG settings; resume with the original config")
        sd = copy.deepcopy(sd)
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_optim", "critic_optim"):
            getattr(self, name).load_state_dict(sd[name])
        self.buffer = ReplayBuffer.from_state_dict(sd["buffer"]) if sd["buffer"] is not None else None
        self.baseline = None if sd["baseline"] is None else float(sd["baseline"])
        self.episodes_seen = int(sd["episodes_seen"])
        self.last_episode_len = int(sd["last_episode_len"])
        self.n_updates = int(sd["n_updates"])
        self.rng = rng_from_str(sd["rng"])
        self.gen.set_state(sd["torch_gen"].cpu())
