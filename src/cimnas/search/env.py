"""HAWIS search environment: the work of one episode (HAWIS III-B-4, Fig. 2 B).

Given a candidate width vector chosen by the agent, one episode does:

(a) slimmable fine-tuning: sandwich steps (Eq. 1) on the candidate B*, a uniform random sub-net
    B^1, a non-uniform random sub-net B^2 and B^3 morphed from B^2 by width jitter, for
    `slimmable_epochs` epochs of `search_train` (fractions and a batch cap allowed);
(b) candidate fine-tuning of B* alone for `candidate_epochs`; the super-net's weights are saved
    before and restored after the evaluation, so (b) never leaks into the next episode;
(c) BN recalibration of B*, accuracy on the held-out `search_eval` split, energy from the
    hardware model (optionally a Monte-Carlo robust accuracy under device defects);
(d) the reward of Eq. 5, with the clean error or the robust error.

Switching (a) / (b) off reproduces the Table V ablation. The environment is the only bridge from
the agent (vectors) to the model, the data and the hardware model (DESIGN.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cimnas.errors import CimnasError, check
from cimnas.nn.supernet import SuperNet
from cimnas.search.rewards import REWARDS
from cimnas.search.spaces import WidthSpace, build_states, episode_state
from cimnas.utils.seed import derive_seed, make_generator

PHASES = ("slimmable_ft", "candidate_ft", "bn_recal", "eval", "energy")


@dataclass
class EnvConfig:
    """Settings of one search episode (HAWIS stage B). Defaults follow the paper / REFERENCE-FACTS."""

    slimmable_ft: bool = True  # phase (a) on/off (Table V ablation)
    slimmable_epochs: float = 1.0  # epochs of search_train per episode in (a) (paper: 1)
    candidate_ft: bool = True  # phase (b) on/off (Table V ablation)
    candidate_epochs: float = 3.0  # epochs of candidate fine-tuning in (b) (paper: 3)
    max_batches: int | None = None  # cap on batches per phase (small budgets); None = no cap
    batch_size: int = 128
    slimmable_lr: float = 0.01  # SGD learning rate of (a)
    candidate_lr: float = 0.01  # SGD learning rate of (b)
    momentum: float = 0.9
    two_side_coef: float = 1e-4  # two-side regularization (Eq. 4) coefficient; 0 = off
    two_side_w0: float = 0.01
    inplace_distill: bool = False  # (a) also trains the largest sub-net, the others learn its soft predictions
    morph_jitter: float = 0.1  # B^3 = B^2 with every action moved by U(-jitter, jitter)
    bn_recal_batches: int = 8  # training batches for BN recalibration before evaluation
    eval_max_batches: int | None = None  # cap on search_eval batches; None = the whole split
    augment: bool = False
    lam: float = 1.0  # lambda of Eq. 5 (> 0); larger = stronger pull to low energy (HAWIS-A, Sec. IV)
    reward: str = "hawis"  # name in cimnas.search.rewards.REWARDS (hawis = Eq. 5)
    reward_accuracy: Literal["clean", "mc_mean", "mc_p5"] = "clean"  # robustness-aware reward option
    robust_trials: int = 5  # K defect samples per candidate for the mc_* rewards

    def validate(self) -> None:
        check(self.lam > 0, f"search lambda must be > 0, got {self.lam}; e.g. search.env.lam=1.0")
        check(self.reward in REWARDS, f"unknown search reward {self.reward!r}; choose one of: "
              f"{', '.join(REWARDS.names())}")
        check(self.slimmable_epochs >= 0 and self.candidate_epochs >= 0,
              "fine-tune epochs must be >= 0 (use slimmable_ft/candidate_ft: false to disable a phase)")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.bn_recal_batches >= 1, f"bn_recal_batches must be >= 1, got {self.bn_recal_batches}")
        check(self.max_batches is None or self.max_batches >= 1, "max_batches must be >= 1 or null")
        check(self.robust_trials >= 1, f"robust_trials must be >= 1, got {self.robust_trials}")
        check(0 <= self.morph_jitter <= 1, f"morph_jitter must be in [0, 1], got {self.morph_jitter}")


@dataclass
class EpisodeResult:
    """Plain-data outcome of one episode (ready for episodes.jsonl)."""

    widths: list[int]
    reward: float
    accuracy: float  # clean accuracy on search_eval
    energy_uj: float
    reward_accuracy: float  # the accuracy used in the reward (clean or robust)
    times_s: dict[str, float] = field(default_factory=dict)
    robust: dict[str, float] | None = None


# ---------------------------------------------------------------------------- hardware adapters
def energy_fn_for(spec: Any, input_shape: tuple[int, ...]) -> Callable[[nn.Module], dict]:
    """model (widths already set) -> hardware estimate dict with at least `energy_uj`."""
    from cimnas.hardware.energy import estimate
    from cimnas.nn.counting import trace_layers

    def energy(model: nn.Module) -> dict:
        return estimate(trace_layers(model, input_shape), spec)

    return energy


def reward_from(error: float, energy_uj: float, baseline_uj: float, lam: float, name: str = "hawis") -> float:
    """The registered reward `name` (REWARDS; default Eq. 5) of a candidate, error clipped to [0, 1]."""
    return REWARDS.create(name, error=min(max(error, 0.0), 1.0), energy=energy_uj,
                          baseline_energy=baseline_uj, lam=lam)


# ---------------------------------------------------------------------------- helpers
def n_batches(n_samples: int, batch_size: int, epochs: float, cap: int | None) -> int:
    """Batches for a (possibly fractional) number of epochs, at least 1 when epochs > 0."""
    if epochs <= 0:
        return 0
    per_epoch = max(1, math.ceil(n_samples / batch_size))
    n = max(1, math.ceil(epochs * per_epoch))
    return min(n, cap) if cap is not None else n


def cycle_batches(split: Any, batch_size: int, count: int, generator: torch.Generator,
                  augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`count` shuffled batches, re-shuffling (from `generator`) at each pass over the split."""
    done = 0
    while done < count:
        for batch in split.batches(batch_size, shuffle=True, generator=generator, augment=augment):
            yield batch
            done += 1
            if done >= count:
                return


@torch.no_grad()
def accuracy(model: nn.Module, split: Any, batch_size: int = 512, max_batches: int | None = None,
             device: torch.device | str | None = None) -> float:
    """Top-1 accuracy in [0, 1] of `model` (eval mode) on `split` (first `max_batches` batches)."""
    was = model.training
    model.eval()
    correct = total = 0
    try:
        for i, (x, y) in enumerate(split.batches(batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            if device is not None:
                x, y = x.to(device), y.to(device)
            correct += int((model(x).argmax(1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was)
    return correct / max(1, total)


def two_side_fn(coef: float, w0: float) -> Callable[[nn.Module], torch.Tensor] | None:
    """The two-side regularizer of Eq. 4 as `model -> scalar`, or None when coef == 0."""
    if coef <= 0:
        return None
    from cimnas.nn.regularizers import two_side_regularizer

    return lambda model: two_side_regularizer(model, w0, coef)


# ---------------------------------------------------------------------------- environment
class HawisEnv:
    """One-episode evaluator of candidate widths on a shared super-net (HAWIS stage B).

    Args:
        supernet: the pretrained super-net (stage A); its weights evolve through phase (a).
        space: the width space (Eq. 7/8) whose `max_widths()` the super-net was built at.
        splits: `cimnas.data.Splits`; (a)(b) use `search_train`, (c) `search_eval`.
        cfg: `EnvConfig`.
        energy_fn: model -> dict with `energy_uj` (hardware model; see `energy_fn_for`).
        baseline_energy_uj: Q(A_b) of Eq. 5, the binarized 1x baseline's energy.
        robust_fn: (standalone model, seed) -> list of K Monte-Carlo accuracies (mc_* rewards).
        layer_geoms: LayerGeom of the searchable layers of A_fp for the Eq. 6 states.
    """

    def __init__(self, supernet: SuperNet, space: WidthSpace, splits: Any, cfg: EnvConfig,
                 energy_fn: Callable[[nn.Module], dict], baseline_energy_uj: float, *,
                 device: torch.device | str = "cpu",
                 robust_fn: Callable[[nn.Module, int], Sequence[float]] | None = None,
                 layer_geoms: Sequence[Any] | None = None, block_indices: Sequence[int] | None = None):
        cfg.validate()
        check(baseline_energy_uj > 0, "baseline energy must be > 0")
        if cfg.reward_accuracy != "clean" and robust_fn is None:
            raise CimnasError(f"reward_accuracy={cfg.reward_accuracy!r} needs a defect model; "
                              "configure search.robust (defects) or use reward_accuracy: clean")
        self.supernet, self.space, self.splits, self.cfg = supernet, space, splits, cfg
        self.energy_fn, self.baseline_energy_uj = energy_fn, float(baseline_energy_uj)
        self.robust_fn = robust_fn
        self.device = torch.device(device)
        self.regularizer = two_side_fn(cfg.two_side_coef, cfg.two_side_w0)
        self.optimizer = torch.optim.SGD(supernet.parameters(), lr=cfg.slimmable_lr, momentum=cfg.momentum)
        self.state_table = build_states(layer_geoms, block_indices) if layer_geoms is not None else None

    # ------------------------------------------------------------------ Eq. 6 states
    def state(self, t: int, prev_action: float, prev_channels: int) -> np.ndarray:
        """s_t (Eq. 6) for the agent's decision on searchable layer t."""
        if self.state_table is None:
            raise CimnasError("environment built without layer geometry; pass layer_geoms")
        return episode_state(self.state_table, t, prev_action, prev_channels, self.space)

    # ------------------------------------------------------------------ phases
    def slimmable_finetune(self, widths: Sequence[int], width_gen: torch.Generator, gen: torch.Generator) -> int:
        """Phase (a): sandwich steps on B*, B^1 (uniform), B^2 (non-uniform), B^3 (morph of B^2).

        `width_gen` draws the sub-nets B^1..B^3, `gen` shuffles the batches."""
        cfg = self.cfg
        count = n_batches(len(self.splits.search_train), cfg.batch_size, cfg.slimmable_epochs, cfg.max_batches)
        for x, y in cycle_batches(self.splits.search_train, cfg.batch_size, count, gen, cfg.augment):
            b1 = self.space.sample_uniform(width_gen)
            b2 = self.space.sample_nonuniform(width_gen)
            b3 = self.space.morph(b2, width_gen, cfg.morph_jitter)
            subnets = [list(widths), list(b1.widths), list(b2.widths), list(b3.widths)]
            if cfg.inplace_distill:
                subnets.insert(0, self.supernet.largest())
            self.supernet.slimmable_step(x.to(self.device), y.to(self.device), subnets, self.optimizer,
                                         self.regularizer, distill=cfg.inplace_distill)
        return count

    def candidate_finetune(self, widths: Sequence[int], gen: torch.Generator) -> int:
        """Phase (b): plain training of the candidate sub-net (fresh SGD; weights restored later)."""
        cfg = self.cfg
        count = n_batches(len(self.splits.search_train), cfg.batch_size, cfg.candidate_epochs, cfg.max_batches)
        opt = torch.optim.SGD(self.supernet.parameters(), lr=cfg.candidate_lr, momentum=cfg.momentum)
        for x, y in cycle_batches(self.splits.search_train, cfg.batch_size, count, gen, cfg.augment):
            self.supernet.slimmable_step(x.to(self.device), y.to(self.device), [list(widths)], opt,
                                         self.regularizer)
        return count

    # ------------------------------------------------------------------ one episode
    def run_episode(self, widths: Sequence[int], seed: int) -> EpisodeResult:
        """Phases (a)-(d) for candidate `widths`; all random draws come from `seed`."""
        cfg = self.cfg
        widths = self.supernet.check_widths(widths)
        width_gen = make_generator(derive_seed(seed, "subnet-widths"))  # phase (a) sub-net draws
        gen = make_generator(seed)
        times = dict.fromkeys(PHASES, 0.0)

        t = time.perf_counter()
        if cfg.slimmable_ft:
            self.slimmable_finetune(widths, width_gen, gen)
        times["slimmable_ft"] = time.perf_counter() - t

        saved = None
        t = time.perf_counter()
        if cfg.candidate_ft:
            saved = {k: v.detach().clone() for k, v in self.supernet.state_dict().items()}
            self.candidate_finetune(widths, gen)
        times["candidate_ft"] = time.perf_counter() - t
        try:
            t = time.perf_counter()
            self.supernet.recalibrate_bn(
                widths, cycle_batches(self.splits.search_train, cfg.batch_size, cfg.bn_recal_batches, gen),
                cfg.bn_recal_batches, self.device)
            times["bn_recal"] = time.perf_counter() - t

            t = time.perf_counter()
            acc = accuracy(self.supernet, self.splits.search_eval, max(cfg.batch_size, 256),
                           cfg.eval_max_batches, self.device)
            robust = None
            reward_acc = acc
            if cfg.reward_accuracy != "clean":
                from cimnas.search.rewards import robust_accuracy

                sub = self.supernet.extract_subnet(widths)
                accs = [float(a) for a in self.robust_fn(sub, seed)]
                stat = "mean" if cfg.reward_accuracy == "mc_mean" else "p5"
                reward_acc = robust_accuracy(accs, stat)
                robust = {"mean": float(np.mean(accs)), "p5": robust_accuracy(accs, "p5"),
                          "min": float(np.min(accs)), "trials": len(accs)}
            times["eval"] = time.perf_counter() - t

            t = time.perf_counter()
            energy_uj = float(self.energy_fn(self.supernet.model)["energy_uj"])
            times["energy"] = time.perf_counter() - t
        finally:
            if saved is not None:
                self.supernet.load_state_dict(saved)
            self.supernet.train()
        reward = reward_from(1.0 - reward_acc, energy_uj, self.baseline_energy_uj, cfg.lam, cfg.reward)
        return EpisodeResult(list(widths), float(reward), float(acc), energy_uj, float(reward_acc),
                             {k: round(v, 4) for k, v in times.items()}, robust)
