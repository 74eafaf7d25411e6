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

Switching (a) / (b) off reproduces the Table V ablation. `run_episode(..., finetune_supernet=False)` scores a
candidate without (a) and restores the whole super-net afterwards (stage B's final re-rank: candidates compared on
one super-net state). The environment is the only bridge from
the agent (vectors) to the model, the data and the hardware model (DESIGN.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cimnas.config import OptimConfig
from cimnas.errors import CimnasError, check
from cimnas.nn.regularizers import two_side_regularizer
from cimnas.nn.supernet import SuperNet
from cimnas.search.rewards import REWARDS, robust_accuracy
from cimnas.search.spaces import WidthSpace, build_states, episode_state
from cimnas.train import cycle_batches, evaluate, make_optimizer, n_batches, train_steps
from cimnas.utils.seed import derive_seed, make_generator

PHASES = ("slimmable_ft", "candidate_ft", "bn_recal", "eval", "energy")
MAX_LAMBDA = 256.0


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
    reg_coef: float = 1e-4  # two-side regularization (Eq. 4) coefficient; 0 = off
    w0: float = 0.01  # Eq. 4 target magnitude
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
        check(self.lam <= MAX_LAMBDA, f"search.env.lam must be <= {MAX_LAMBDA:g} (Eq. 5 needs lam < Q_min/Q(A_b), "
              f"at most r_max^2), got {self.lam}")
        check(0 <= self.slimmable_epochs <= 1000 and 0 <= self.candidate_epochs <= 1000,
              "search.env fine-tune epochs must be in [0, 1000] (use slimmable_ft/candidate_ft: false to disable "
              "a phase)")
        check(self.batch_size >= 1, f"search.env.batch_size must be >= 1, got {self.batch_size}")
        check(self.bn_recal_batches >= 1, f"search.env.bn_recal_batches must be >= 1, got {self.bn_recal_batches}")
        check(self.max_batches is None or self.max_batches >= 1, "search.env.max_batches must be >= 1 or null")
        check(self.eval_max_batches is None or self.eval_max_batches >= 1,
              "search.env.eval_max_batches must be >= 1 or null")
        for key in ("slimmable_lr", "candidate_lr"):
            v = getattr(self, key)
            check(0 < v <= 10, f"search.env.{key} must be in (0, 10], got {v}")
        check(0 <= self.momentum < 1, f"search.env.momentum must be in [0, 1), got {self.momentum}")
        check(0 <= self.reg_coef < 1 and 0 <= self.w0 <= 10,
              f"search.env.reg_coef must be in [0, 1) and w0 in [0, 10], got {self.reg_coef}, {self.w0}")
        check(1 <= self.robust_trials <= 10_000, f"search.env.robust_trials must be in 1..10000, "
              f"got {self.robust_trials}")
        check(0 <= self.morph_jitter <= 1, f"search.env.morph_jitter must be in [0, 1], got {self.morph_jitter}")

    def optim(self, lr: float) -> OptimConfig:
        """The SGD settings of phase (a) or (b) in the shared vocabulary (cimnas.train.make_optimizer)."""
        return OptimConfig(lr=lr, momentum=self.momentum, regularizer="none", weight_decay=0.0)


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


# ---------------------------------------------------------------------------- reward
def reward_from(error: float, energy_uj: float, baseline_uj: float, lam: float, name: str = "hawis") -> float:
    """The registered reward `name` (REWARDS; default Eq. 5) of a candidate, error clipped to [0, 1]."""
    return REWARDS.create(name, error=min(max(error, 0.0), 1.0), energy=energy_uj,
                          baseline_energy=baseline_uj, lam=lam)


# ---------------------------------------------------------------------------- environment
class HawisEnv:
    """One-episode evaluator of candidate widths on a shared super-net (HAWIS stage B).

    Args:
        supernet: the pretrained super-net (stage A); its weights evolve through phase (a).
        space: the width space (Eq. 7/8) whose `max_widths()` the super-net was built at.
        splits: `cimnas.data.Splits`; (a)(b) use `search_train`, (c) `search_eval`.
        cfg: `EnvConfig`.
        energy_fn: model -> dict with `energy_uj` (hardware model, e.g. `hardware.energy.estimate_model`).
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
        self.regularizer = (None if cfg.reg_coef <= 0 else
                            (lambda model: two_side_regularizer(model, cfg.w0, cfg.reg_coef)))
        self.optimizer = make_optimizer(supernet, cfg.optim(cfg.slimmable_lr))
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

        def step(x: torch.Tensor, y: torch.Tensor) -> float:
            b1 = self.space.sample_uniform(width_gen)
            b2 = self.space.sample_nonuniform(width_gen)
            b3 = self.space.morph(b2, width_gen, cfg.morph_jitter)
            subnets = [list(widths), list(b1.widths), list(b2.widths), list(b3.widths)]
            if cfg.inplace_distill:
                subnets.insert(0, self.supernet.largest())
            return self.supernet.slimmable_step(x, y, subnets, self.optimizer, self.regularizer,
                                                distill=cfg.inplace_distill)

        train_steps(self.supernet, cycle_batches(self.splits.search_train, cfg.batch_size, count, gen, cfg.augment),
                    None, device=self.device, step=step, total=count)
        return count

    def candidate_finetune(self, widths: Sequence[int], gen: torch.Generator) -> int:
        """Phase (b): plain training of the candidate sub-net (fresh SGD; weights restored later)."""
        cfg = self.cfg
        count = n_batches(len(self.splits.search_train), cfg.batch_size, cfg.candidate_epochs, cfg.max_batches)
        opt = make_optimizer(self.supernet, cfg.optim(cfg.candidate_lr))

        def step(x: torch.Tensor, y: torch.Tensor) -> float:
            return self.supernet.slimmable_step(x, y, [list(widths)], opt, self.regularizer)

        train_steps(self.supernet, cycle_batches(self.splits.search_train, cfg.batch_size, count, gen, cfg.augment),
                    None, device=self.device, step=step, total=count)
        return count

    # ------------------------------------------------------------------ one episode
    def run_episode(self, widths: Sequence[int], seed: int, *, finetune_supernet: bool = True) -> EpisodeResult:
        """Phases (a)-(d) for candidate `widths`; all random draws come from `seed`.

        `finetune_supernet=False` scores the candidate on the super-net as it is: phases (b)-(d) only, and the
        super-net's whole state (BN running statistics included) is restored afterwards, so candidates scored
        one after another all see the same super-net state (the final re-rank of stage B)."""
        cfg = self.cfg
        widths = self.supernet.check_widths(widths)
        width_gen = make_generator(derive_seed(seed, "subnet-widths"))  # phase (a) sub-net draws
        gen = make_generator(seed)
        times = dict.fromkeys(PHASES, 0.0)

        t = time.perf_counter()
        if cfg.slimmable_ft and finetune_supernet:
            self.slimmable_finetune(widths, width_gen, gen)
        times["slimmable_ft"] = time.perf_counter() - t

        saved = None
        t = time.perf_counter()
        if cfg.candidate_ft or not finetune_supernet:
            saved = {k: v.detach().clone() for k, v in self.supernet.state_dict().items()}
        if cfg.candidate_ft:
            self.candidate_finetune(widths, gen)
        times["candidate_ft"] = time.perf_counter() - t
        try:
            t = time.perf_counter()
            self.supernet.recalibrate_bn(
                widths, cycle_batches(self.splits.search_train, cfg.batch_size, cfg.bn_recal_batches, gen),
                cfg.bn_recal_batches, self.device)
            times["bn_recal"] = time.perf_counter() - t

            t = time.perf_counter()
            acc = evaluate(self.supernet, self.splits.search_eval, batch_size=max(cfg.batch_size, 256),
                           device=self.device, max_batches=cfg.eval_max_batches)
            robust = None
            reward_acc = acc
            if cfg.reward_accuracy != "clean":
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
