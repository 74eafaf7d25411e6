"""LSTM controller trained with REINFORCE (Zoph & Le 2017; the controller of NACIM / UAE).

The controller emits one categorical decision per (layer, hyper-parameter) of a search space
described only by `decision_sizes` (agents see numbers, never models). At step t a 2-layer LSTM
(hidden 35 by default, as in the related public code) reads an embedding of decision t-1 (a
learned start vector at t = 0); decision t's own linear head turns the LSTM output into logits
and a softmax, from which the choice is sampled with the controller's seeded torch.Generator.

Training (REINFORCE with an exponential-moving-average baseline b):

    loss = -1/B sum_b [(R_b - b_b) * sum_t log pi(a_bt) + beta * H_b]
    b <- decay * b + (1 - decay) * R        (after each reward; the first reward sets b)

one Adam step per batch of B rollouts (default 5); beta is the optional entropy bonus. The
log-probabilities are recomputed from the stored decisions at update time, so a controller
that is restored and replays logged rollouts takes exactly the same steps as one that ran
without interruption. `state_dict()` holds weights, optimizer, baseline, the pending rollouts
and the generator state, all as tensors (loads with weights_only=True).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from cimnas.errors import check


@dataclass
class LSTMControllerConfig:
    """Settings of the LSTM controller (the keyword arguments of `LSTMController`)."""

    hidden: int = 35  # LSTM hidden size = embedding size
    num_layers: int = 2  # stacked LSTM layers
    lr: float = 0.01  # Adam learning rate
    baseline_decay: float = 0.95  # EMA baseline: b <- decay b + (1 - decay) R
    entropy_weight: float = 0.0  # beta of the entropy bonus
    batch_rollouts: int = 5  # rollouts per REINFORCE step
    temperature: float = 1.0  # softmax temperature of every head

    def validate(self) -> None:
        check(self.hidden >= 1 and self.num_layers >= 1, "controller.hidden and controller.layers must be >= 1")
        check(self.lr > 0, f"controller.lr must be > 0, got {self.lr}")
        check(0 <= self.baseline_decay < 1, f"controller.baseline_decay must be in [0, 1), got {self.baseline_decay}")
        check(self.entropy_weight >= 0, f"controller.entropy_weight must be >= 0, got {self.entropy_weight}")
        check(self.batch_rollouts >= 1, f"controller.batch_rollouts must be >= 1, got {self.batch_rollouts}")
        check(self.temperature > 0, f"controller.temperature must be > 0, got {self.temperature}")


class LSTMController(nn.Module):
    """Autoregressive LSTM policy over a sequence of categorical decisions + REINFORCE."""

    def __init__(self, decision_sizes: list[int], *, hidden: int = 35, num_layers: int = 2, lr: float = 0.01,
                 baseline_decay: float = 0.95, entropy_weight: float = 0.0, batch_rollouts: int = 5,
                 temperature: float = 1.0, seed: int = 0):
        super().__init__()
        check(len(decision_sizes) > 0 and all(s >= 1 for s in decision_sizes),
              f"the controller needs at least one decision with >= 1 choice, got {decision_sizes}")
        LSTMControllerConfig(hidden, num_layers, lr, baseline_decay, entropy_weight, batch_rollouts,
                             temperature).validate()
        self.decision_sizes = [int(s) for s in decision_sizes]
        self.baseline_decay, self.entropy_weight = float(baseline_decay), float(entropy_weight)
        self.batch_rollouts, self.temperature = int(batch_rollouts), float(temperature)
        g = torch.Generator()
        g.manual_seed(int(seed))  # parameter init is seeded too, independent of global state
        self.start = nn.Parameter(torch.empty(1, hidden).uniform_(-0.1, 0.1, generator=g))
        self.lstm = nn.LSTM(hidden, hidden, num_layers=num_layers)
        self.embeddings = nn.ModuleList(nn.Embedding(s, hidden) for s in self.decision_sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden, s) for s in self.decision_sizes)
        with torch.no_grad():
            for p in list(self.lstm.parameters()) + list(self.embeddings.parameters()) + list(self.heads.parameters()):
                p.uniform_(-0.1, 0.1, generator=g)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed) + 1)
        self.baseline: float | None = None
        self.pending: list[tuple[list[int], float]] = []  # (decisions, advantage) awaiting an update
        self.updates = 0

    # ------------------------------------------------------------ policy
    def _logits(self, decisions: list[int] | None) -> list[torch.Tensor]:
        """Logits of every step; with `decisions` given, teacher-forced (for log-probs)."""
        x, state, out = self.start, None, []
        for t, _ in enumerate(self.decision_sizes):
            h, state = self.lstm(x, state)
            logits = self.heads[t](h[-1]) / self.temperature
            out.append(logits)
            if decisions is not None:
                a = decisions[t]
            else:
                a = int(torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=self.generator))
            x = self.embeddings[t](torch.tensor([a]))
            if decisions is None:
                out[-1] = (logits, a)
        return out

    @torch.no_grad()
    def sample(self) -> list[int]:
        """Draw one child: a list with one choice index per decision."""
        return [a for _, a in self._logits(None)]

    @torch.no_grad()
    def greedy(self) -> list[int]:
        """The most likely decision at every step (argmax, teacher-forced on its own choices)."""
        x, state, out = self.start, None, []
        for t, _ in enumerate(self.decision_sizes):
            h, state = self.lstm(x, state)
            a = int(self.heads[t](h[-1]).argmax())
            out.append(a)
            x = self.embeddings[t](torch.tensor([a]))
        return out

    def log_prob_entropy(self, decisions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_t log pi(a_t) and sum_t H(pi_t) of one rollout (differentiable)."""
        logp, ent = torch.zeros(()), torch.zeros(())
        for t, logits in enumerate(self._logits(decisions)):
            lp = torch.log_softmax(logits, -1)
            logp = logp + lp[decisions[t]]
            ent = ent - (lp.exp() * lp).sum()
        return logp, ent

    @torch.no_grad()
    def probabilities(self, decisions: list[int]) -> list[torch.Tensor]:
        """Softmax of every step when teacher-forced along `decisions` (for inspection / tests)."""
        return [torch.softmax(lg, -1) for lg in self._logits(decisions)]

    # ------------------------------------------------------------ learning
    def observe(self, decisions: list[int], reward: float) -> bool:
        """Record one rollout's reward; runs a REINFORCE step when a batch is full (returns True)."""
        reward = float(reward)
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self.pending.append(([int(a) for a in decisions], advantage))
        if len(self.pending) < self.batch_rollouts:
            return False
        self._update()
        return True

    def _update(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros(())
        for decisions, adv in self.pending:
            logp, ent = self.log_prob_entropy(decisions)
            loss = loss - adv * logp - self.entropy_weight * ent
        (loss / len(self.pending)).backward()
        self.optimizer.step()
        self.pending = []
        self.updates += 1

    # ------------------------------------------------------------ resume
    def state_dict(self, *args, **kwargs) -> dict:  # type: ignore[override]
        n = len(self.decision_sizes)
        pend_d = torch.tensor([d for d, _ in self.pending], dtype=torch.long).reshape(-1, n)
        pend_a = torch.tensor([a for _, a in self.pending], dtype=torch.float64)
        # deep copies: a state dict must not alias the live weights / Adam moments
        return {"model": copy.deepcopy(super().state_dict()), "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "generator": self.generator.get_state(),
                "baseline": torch.tensor(float("nan") if self.baseline is None else self.baseline, dtype=torch.float64),
                "pending_decisions": pend_d, "pending_advantages": pend_a, "updates": self.updates,
                "decision_sizes": list(self.decision_sizes)}

    def load_state_dict(self, state: dict, strict: bool = True):  # type: ignore[override]
        check(list(state.get("decision_sizes", [])) == self.decision_sizes,
              "the controller checkpoint was made for another search space; start a new run folder")
        super().load_state_dict(state["model"], strict=strict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        b = float(state["baseline"])
        self.baseline = None if b != b else b
        decisions, advantages = state["pending_decisions"].tolist(), state["pending_advantages"].tolist()
        self.pending = [([int(v) for v in d], float(a)) for d, a in zip(decisions, advantages, strict=True)]
        self.updates = int(state["updates"])
        return None
