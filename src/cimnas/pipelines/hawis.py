"""HAWIS pipeline: stage A (super-net pretraining), B (width search), C (retrain + evaluation).

Run folder (`cimnas hawis run --config FILE --out DIR [--resume]`)::

    config.yaml            the resolved config (resume checks it against the given one)
    run.log                the log (also printed)
    episodes.jsonl         one line per finished episode (widths, reward, accuracy, energy, times)
    best_arch.json         highest-reward widths and their search metrics
    pareto.json            accuracy-vs-energy Pareto front of the searched candidates
    stage_c.json           stage C results per trained model (searched, Pareto points, U-kx, refs)
    final.json             the searched model: test accuracy, energy_uj, BiOps/FLOPs, robustness
    checkpoints/           supernet_pretrain.pt (per epoch), supernet.pt (after A),
                           search_state.pt (after every episode), final_model.pt
    figures/, table.md     reports (cimnas.reports)

Resume: every piece of state that a later episode depends on (super-net weights, the slimmable
optimizer, the agent's state_dict with its RNGs, the episode records) is saved atomically after
each episode; every random draw of episode e comes from `derive_seed(seed, "episode", e)`. So a
killed run resumed with the same config repeats exactly what an uninterrupted run does (CPU).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from cimnas.config import diff_configs, from_dict, load_config, to_dict
from cimnas.errors import CimnasError, check
from cimnas.nn.models import save_model_checkpoint
from cimnas.nn.supernet import SuperNet
from cimnas.search.env import PHASES, EnvConfig, HawisEnv, accuracy, cycle_batches, n_batches, two_side_fn
from cimnas.search.spaces import WidthSpace
from cimnas.utils.io import (
    append_jsonl,
    atomic_write_bytes,
    load_checkpoint,
    read_json,
    read_jsonl,
    save_checkpoint,
    write_json,
)
from cimnas.utils.seed import derive_seed, make_generator, resolve_device, seed_everything

FORMAT = "cimnas-hawis-v1"


# ============================================================================ configuration
@dataclass
class DataConfig:
    """Dataset and splits (search_train / search_eval partition train)."""

    name: str = "digits"
    data_dir: str | None = None
    search_fraction: float | None = None  # held-out share for search_eval; None = dataset default
    limit: int | None = None  # at most this many training samples (small budgets)
    test_limit: int | None = None
    augment: bool | None = None  # None = dataset default


@dataclass
class ModelConfig:
    """The float baseline A_fp that re-factorization binarizes (options go to build_model)."""

    name: str = "resnet20"
    options: dict = field(default_factory=dict)  # extra build_model kwargs (e.g. refactor options)


@dataclass
class SpaceConfig:
    """Width space (Eq. 7/8): identical bounds for all layers, as in the paper."""

    r_min: float = 1.0
    r_max: float = 5.0  # HAWIS: 5 (U-5x over-fits beyond it)
    d: int = 4  # channel granularity

    def validate(self) -> None:
        check(self.r_min > 0, f"space.r_min must be > 0, got {self.r_min}")
        check(self.r_min <= self.r_max, f"space.r_min ({self.r_min}) > space.r_max ({self.r_max}); "
              "set r_min <= r_max")
        check(self.d >= 1, f"space.d (channel granularity) must be >= 1, got {self.d}")


@dataclass
class TrainConfig:
    """A plain SGD schedule (stage A pretraining, stage C retraining)."""

    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0  # L2; HAWIS uses the two-side regularizer instead
    milestones: list[int] = field(default_factory=list)  # epochs where lr *= gamma
    gamma: float = 0.1
    two_side_coef: float = 1e-4  # Eq. 4 coefficient (authors' code: 1e-4); 0 = off
    two_side_w0: float = 0.01  # Eq. 4 w0 (authors' code: 0.01)
    max_batches: int | None = None  # cap on batches per epoch (small budgets)

    def validate(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.max_batches is None or self.max_batches >= 1, "max_batches must be >= 1 or null")


@dataclass
class PretrainConfig(TrainConfig):
    """Stage A: slimmable (sandwich-rule) pretraining of the super-net."""

    n_random: int = 2  # random non-uniform sub-nets per step besides the largest and smallest
    inplace_distill: bool = False  # smaller sub-nets learn the largest's soft predictions (US-Nets)


@dataclass
class SearchConfig:
    """Stage B: agent + environment."""

    episodes: int = 600  # HAWIS: 600
    agent: str = "ddpg"  # ddpg | random
    agent_options: dict = field(default_factory=dict)  # fields of the agent's config (e.g. warmup_episodes)
    env: EnvConfig = field(default_factory=EnvConfig)

    def validate(self) -> None:
        check(self.episodes >= 1, f"search.episodes must be >= 1, got {self.episodes}")
        check(self.agent in ("ddpg", "random"), f"unknown agent {self.agent!r}; choose ddpg or random")


@dataclass
class DefectsConfig:
    """Device defects for Monte-Carlo robustness (HAWIS II-D; rates from fabrication data)."""

    sa0_rate: float = 0.0175  # stuck-at-0 (stuck at low resistance / high conductance)
    sa1_rate: float = 0.0904  # stuck-at-1 (stuck at high resistance / low conductance)
    sigma: float = 0.0  # lognormal resistance variation theta ~ N(0, sigma^2) (Eq. 3)
    trials: int = 20  # Monte-Carlo samples for the final robustness summary

    def validate(self) -> None:
        check(0 <= self.sa0_rate <= 1 and 0 <= self.sa1_rate <= 1, "defect rates must be in [0, 1]")
        check(self.sigma >= 0, f"defects.sigma must be >= 0, got {self.sigma}")
        check(self.trials >= 0, f"defects.trials must be >= 0, got {self.trials}")


@dataclass
class RetrainConfig(TrainConfig):
    """Stage C: train the searched widths from scratch on the full training split."""

    epochs: int = 400
    lr: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [200, 260, 320])
    widths: list[int] | None = None  # retrain these widths instead of the search's best
    pareto_models: int = 0  # also retrain up to this many Pareto-front candidates
    baselines: list[float] = field(default_factory=list)  # U-kx baselines trained with the same budget
    references: list[str] = field(default_factory=list)  # "fp" and/or "8bit" reference models
    robustness: bool = True  # Monte-Carlo robustness of the final model under `defects`

    def validate(self) -> None:
        super().validate()
        for k in self.baselines:
            check(k > 0, f"retrain.baselines must be positive width multipliers, got {k}")
        for r in self.references:
            check(r in ("fp", "8bit"), f"retrain.references: unknown {r!r}; use fp and/or 8bit")


@dataclass
class HardwareConfig:
    """Crossbar spec for the energy model."""

    preset: str = "mnsim-default"
    overrides: list[str] = field(default_factory=list)  # "field=value" CrossbarSpec overrides


@dataclass
class ReportConfig:
    fig4_layer: int = 1  # 0-based searchable layer shown in the Fig. 4-style plot (paper: 2nd layer)
    compare_uniform: float = 4.0  # U-kx shown next to the searched widths in the Fig. 5-style plot


@dataclass
class HawisConfig:
    """Root config of a HAWIS run (configs/hawis/*.yaml)."""

    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(epochs=120, milestones=[60, 90]))
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    defects: DefectsConfig = field(default_factory=DefectsConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def load_hawis_config(path: str | Path | None, overrides: list[str] | None = None) -> HawisConfig:
    return load_config(HawisConfig, path, overrides)


# ============================================================================ run folder
class RunFolder:
    """Paths and small I/O helpers of one run folder; logs to run.log and stdout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.ckpt = self.root / "checkpoints"
        self.figures = self.root / "figures"

    def path(self, name: str) -> Path:
        return self.root / name

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "run.log", "a") as f:
            f.write(line + "\n")


def prepare_run_folder(cfg: HawisConfig, out: str | Path, resume: bool) -> RunFolder:
    """Create the folder (or check it on resume): an existing run is never overwritten."""
    run = RunFolder(out)
    resolved = to_dict(cfg)
    cfg_path = run.path("config.yaml")
    if cfg_path.is_file():
        if not resume:
            raise CimnasError(f"{run.root} already holds a run; pass --resume to continue it or choose another --out")
        try:
            old = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise CimnasError(f"{cfg_path} is corrupt; fix it or start a new run folder") from e
        try:  # through the dataclasses, so keys added since (with their defaults) do not count as changes
            old = to_dict(from_dict(HawisConfig, old))
        except CimnasError:
            pass  # an unknown or mistyped key: compare as stored, the diff names it
        diff = diff_configs(old, resolved)
        if diff:
            raise CimnasError(f"config differs from the one in {run.root} at: {', '.join(diff)}; "
                              "resume with the original config or use another --out")
    else:
        if run.root.exists() and any(run.root.iterdir()) and not resume:
            raise CimnasError(f"{run.root} is not empty; choose an empty or new --out folder")
        atomic_write_bytes(cfg_path, yaml.safe_dump(resolved, sort_keys=False).encode())
    run.ckpt.mkdir(parents=True, exist_ok=True)
    return run


# ============================================================================ shared context
@dataclass
class Context:
    """What every stage needs: config, run folder, data, device, hardware spec, width space."""

    cfg: HawisConfig
    run: RunFolder
    splits: Any
    device: torch.device
    spec: Any
    space: WidthSpace
    base_widths: list[int]
    input_shape: tuple[int, int, int]

    def build(self, widths: list[int] | None, precision: str = "binary", **kw: Any) -> nn.Module:
        from cimnas.nn.models import build_model

        opts = dict(self.cfg.model.options)
        opts.update(kw)
        return build_model(self.cfg.model.name, in_channels=self.splits.in_channels,
                           num_classes=self.splits.num_classes, image_size=self.splits.image_size,
                           widths=widths, precision=precision, **opts).to(self.device)

    def energy(self, model: nn.Module) -> dict:
        from cimnas.hardware.energy import estimate_model

        est = estimate_model(model, self.input_shape, self.spec)
        return {"energy_uj": float(est["energy_uj"]), "latency_us": float(est["latency_us"]),
                "crossbars": int(est["crossbars"]), "biops": int(est["biops"]), "flops": int(est["flops"])}


def make_context(cfg: HawisConfig, run: RunFolder) -> Context:
    from cimnas.data import load_dataset
    from cimnas.hardware.crossbar import load_spec

    device = resolve_device(cfg.device)
    d = cfg.data
    splits = load_dataset(d.name, d.data_dir, seed=cfg.seed, search_fraction=d.search_fraction, device=device,
                          limit=d.limit, test_limit=d.test_limit, augment=d.augment)
    spec = load_spec(cfg.hardware.preset, cfg.hardware.overrides)
    ctx = Context(cfg, run, splits, device, spec, WidthSpace((1,)), [], (splits.in_channels,
                                                                         splits.image_size, splits.image_size))
    probe = ctx.build(None, precision="float")
    ctx.base_widths = list(probe.base_widths)
    s = cfg.space
    ctx.space = WidthSpace(tuple(ctx.base_widths), r_min=s.r_min, r_max=s.r_max, d=s.d)
    write_json(run.path("space.json"), ctx.space.to_dict())
    if cfg.retrain.widths is not None:
        check_multiples(cfg.retrain.widths, len(ctx.base_widths), s.d, "retrain.widths")
    return ctx


def check_multiples(widths: list[int], n: int, d: int, key: str) -> None:
    """A user-given width vector: `n` positive multiples of d."""
    check(len(widths) == n, f"{key} has {len(widths)} entries; the model has {n} searchable layers")
    for i, w in enumerate(widths):
        check(w >= 1 and w % d == 0, f"{key}[{i}] = {w} is not a positive multiple of space.d={d}; "
              f"use {max(d, int(math.floor(w / d + 0.5)) * d)}")


def build_supernet(ctx: Context) -> SuperNet:
    model = ctx.build(list(ctx.space.max_widths().widths))
    s = ctx.cfg.space
    return SuperNet(model, r_min=s.r_min, r_max=s.r_max, d=s.d)


# ============================================================================ stage A
def stage_pretrain(ctx: Context) -> SuperNet:
    """Stage A: slimmable pretraining with the sandwich rule and two-side regularization."""
    cfg, run = ctx.cfg.pretrain, ctx.run
    done_path, state_path = run.ckpt / "supernet.pt", run.ckpt / "supernet_pretrain.pt"
    seed_everything(derive_seed(ctx.cfg.seed, "supernet-init"))
    net = build_supernet(ctx)
    if done_path.is_file():
        ck = load_checkpoint(done_path, map_location=ctx.device)
        _load_state(net, ck, done_path)
        run.log(f"stage A: loaded pretrained super-net from {done_path}")
        return net
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    start = 0
    if state_path.is_file():
        ck = load_checkpoint(state_path, map_location=ctx.device)
        _load_state(net, ck, state_path)
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start = int(ck["epoch"])
        run.log(f"stage A: resuming after epoch {start}")
    reg = two_side_fn(cfg.two_side_coef, cfg.two_side_w0)
    split = ctx.splits.search_train
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        gen = make_generator(derive_seed(ctx.cfg.seed, "pretrain", epoch))
        count = n_batches(len(split), cfg.batch_size, 1.0, cfg.max_batches)
        losses = []
        for x, y in _progress(cycle_batches(split, cfg.batch_size, count, gen), count, f"stage A epoch {epoch + 1}"):
            widths = net.sandwich_widths(gen, cfg.n_random)
            losses.append(net.slimmable_step(x.to(ctx.device), y.to(ctx.device), widths, opt, reg,
                                             distill=cfg.inplace_distill))
        sched.step()
        save_checkpoint(state_path, {"format": FORMAT, "state_dict": net.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "epoch": epoch + 1})
        run.log(f"stage A epoch {epoch + 1}/{cfg.epochs}: loss {np.mean(losses):.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
    for name, w in (("largest", net.largest()), ("smallest", net.smallest())):
        net.recalibrate_bn(w, cycle_batches(split, cfg.batch_size, 8, make_generator(0)), 8, ctx.device)
        run.log(f"stage A: {name} sub-net accuracy on search_eval "
                f"{accuracy(net, ctx.splits.search_eval, device=ctx.device):.4f}")
        net.train()
    save_checkpoint(done_path, {"format": FORMAT, "state_dict": net.state_dict(), "arch": dict(net.model.arch_meta),
                                "epoch": cfg.epochs})
    return net


def _load_state(module: nn.Module, ck: dict, path: Path) -> None:
    if ck.get("format") != FORMAT or "state_dict" not in ck:
        raise CimnasError(f"checkpoint {path} is not a HAWIS checkpoint; delete it or use another --out")
    try:
        module.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise CimnasError(f"checkpoint {path} does not match the configured model; delete it or use "
                          "another --out") from e


def _progress(it: Any, total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())


# ============================================================================ stage B
def make_agent(name: str, state_dim: int, options: dict, seed: int) -> Any:
    """A DDPG or random agent with `options` as fields of its config dataclass."""
    from cimnas.search.agents import make_agent as _make

    return _make(name, state_dim, options, seed)


def searchable_geoms(ctx: Context) -> tuple[list[Any], list[int]]:
    """Eq. 6 static columns are measured on A_fp: the traced geometry of its searchable layers,
    and a block index per layer (layers sharing a module prefix share a block)."""
    from cimnas.nn.counting import trace_layers

    fp = ctx.build(None, precision="float")
    geoms = trace_layers(fp, ctx.input_shape)
    by_name = {g.name: g for g in geoms}
    picked = [by_name[n] for n in fp.searchable_layer_names()]
    prefixes: list[str] = []
    blocks = []
    for g in picked:
        p = g.name.rsplit(".", 1)[0] if "." in g.name else g.name
        if p not in prefixes:
            prefixes.append(p)
        blocks.append(prefixes.index(p))
    return picked, blocks


def _mc_fn(ctx: Context, trials: int) -> Callable[[nn.Module, int], list[float]]:
    def fn(model: nn.Module, seed: int) -> list[float]:
        return mc_accuracies(ctx, model, ctx.splits.search_eval, trials, seed)

    return fn


def mc_accuracies(ctx: Context, model: nn.Module, split: Any, trials: int, seed: int) -> list[float]:
    """Accuracies of `model` over `trials` defect samples (cimnas.hardware.montecarlo)."""
    from cimnas.hardware import montecarlo
    from cimnas.hardware.defects import DefectConfig

    d = ctx.cfg.defects
    defects = DefectConfig(sa0=d.sa0_rate, sa1=d.sa1_rate, sigma_variation=d.sigma)
    out = montecarlo.evaluate_trials(model, split, ctx.spec, defects, trials, seed, device=ctx.device)
    return [float(a) for a in out.accs]


def stage_search(ctx: Context, net: SuperNet, *, stop_after: int | None = None) -> list[dict]:
    """Stage B: `episodes` episodes of agent -> widths -> environment -> reward -> agent update.

    `stop_after` (tests): raise RuntimeError after that many episodes of this call have been saved,
    simulating a kill.
    """
    cfg, run = ctx.cfg, ctx.run
    scfg = cfg.search
    geoms, blocks = searchable_geoms(ctx)
    with net.subnet(ctx.base_widths):
        base_energy = ctx.energy(net.model)["energy_uj"]
    with net.subnet(list(ctx.space.min_widths().widths)):
        min_ratio = ctx.energy(net.model)["energy_uj"] / base_energy
    if scfg.env.lam >= min_ratio:
        run.log(f"stage B: WARNING search.env.lam = {scfg.env.lam} >= Q_min/Q(A_b) = {min_ratio:.3g}: Eq. 5 then "
                "gives candidates below lambda*Q(A_b) a reward >= 0 that grows with their error; "
                f"choose lam < {min_ratio:.3g} (docs/hawis.md, 'Choosing lambda')")
    robust_fn = _mc_fn(ctx, scfg.env.robust_trials) if scfg.env.reward_accuracy != "clean" else None
    env = HawisEnv(net, ctx.space, ctx.splits, scfg.env, lambda m: ctx.energy(m), base_energy,
                   device=ctx.device, robust_fn=robust_fn, layer_geoms=geoms, block_indices=blocks)
    agent = make_agent(scfg.agent, env.state_table.shape[1], scfg.agent_options, derive_seed(cfg.seed, "agent"))
    state_path = run.ckpt / "search_state.pt"
    records: list[dict] = []
    if state_path.is_file():
        ck = load_checkpoint(state_path, map_location=ctx.device)
        _load_state(net, ck, state_path)
        try:
            env.optimizer.load_state_dict(ck["optimizer"])
            agent.load_state_dict(ck["agent"])
            records = json.loads(ck["records"])
        except CimnasError:
            raise  # the agent's own message (e.g. made with other DDPG settings) says it best
        except (KeyError, ValueError, TypeError) as e:
            raise CimnasError(f"search checkpoint {state_path} is incomplete or corrupt; delete it to restart "
                              "the search") from e
        run.log(f"stage B: resuming after episode {len(records)}")
    _sync_jsonl(run.path("episodes.jsonl"), records)
    run.log(f"stage B: {scfg.episodes} episodes, agent {scfg.agent}, Q(A_b) = {base_energy:.4g} uJ, "
            f"lambda = {scfg.env.lam}, {ctx.space.n_steps} layers")
    ran = 0
    for episode in range(len(records), scfg.episodes):
        t0 = time.perf_counter()
        states, actions = [], []
        prev_a, prev_c = 0.0, 0
        for t in range(ctx.space.n_steps):
            s = env.state(t, prev_a, prev_c)
            a = float(agent.act(s, episode))
            states.append(s)
            actions.append(a)
            prev_a, prev_c = a, ctx.space.channels(a, ctx.base_widths[t])
        widths = list(ctx.space.widths(actions).widths)
        res = env.run_episode(widths, derive_seed(cfg.seed, "episode", episode))
        t = time.perf_counter()
        agent.observe_episode(states, actions, res.reward)
        agent.update()
        times = dict(res.times_s)
        times["agent_update"] = round(time.perf_counter() - t, 4)
        rec = {"episode": episode, "widths": res.widths, "reward": res.reward, "accuracy": res.accuracy,
               "energy_uj": res.energy_uj, "reward_accuracy": res.reward_accuracy, "robust": res.robust,
               "wall_s": round(time.perf_counter() - t0, 4), "times_s": times}
        records.append(rec)
        save_checkpoint(state_path, {"format": FORMAT, "state_dict": net.state_dict(),
                                     "optimizer": env.optimizer.state_dict(), "agent": agent.state_dict(),
                                     "records": json.dumps(records), "episode": episode + 1})
        append_jsonl(run.path("episodes.jsonl"), rec)
        run.log(f"episode {episode + 1}/{scfg.episodes}: reward {res.reward:+.4f} acc {res.accuracy:.4f} "
                f"energy {res.energy_uj:.4g} uJ  widths {widths}  time {rec['wall_s']:.1f} s ("
                + ", ".join(f"{k} {v:.2f}" for k, v in times.items()) + ")")
        ran += 1
        if stop_after is not None and ran >= stop_after:
            raise RuntimeError(f"test hook: simulated kill after episode {episode + 1}")
    write_search_summary(run, records)
    return records


def _sync_jsonl(path: Path, records: list[dict]) -> None:
    """Make episodes.jsonl hold exactly the checkpointed records (repairs a torn or missing line)."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    if not path.is_file() or path.read_text() != text:
        atomic_write_bytes(path, text.encode())


def pareto_front(records: list[dict]) -> list[dict]:
    """Records not dominated in (higher accuracy, lower energy), sorted by energy."""
    front = []
    for r in records:
        dominated = any(o["accuracy"] >= r["accuracy"] and o["energy_uj"] <= r["energy_uj"]
                        and (o["accuracy"] > r["accuracy"] or o["energy_uj"] < r["energy_uj"]) for o in records)
        if not dominated and not any(f["widths"] == r["widths"] for f in front):
            front.append(r)
    return sorted(front, key=lambda r: r["energy_uj"])


def best_record(records: list[dict]) -> dict:
    """Highest reward; ties go to the earlier episode."""
    check(len(records) > 0, "no finished episodes; run the search stage first")
    return max(records, key=lambda r: (r["reward"], -r["episode"]))


def write_search_summary(run: RunFolder, records: list[dict]) -> None:
    best = best_record(records)
    write_json(run.path("best_arch.json"), {"widths": best["widths"], "episode": best["episode"],
                                            "reward": best["reward"], "accuracy": best["accuracy"],
                                            "energy_uj": best["energy_uj"]})
    write_json(run.path("pareto.json"), [{k: r[k] for k in ("episode", "widths", "reward", "accuracy", "energy_uj")}
                                         for r in pareto_front(records)])


# ============================================================================ stage C
def train_from_scratch(ctx: Context, model: nn.Module, tcfg: TrainConfig, label: str) -> float:
    """Train `model` on the full training split with `tcfg`; returns test accuracy."""
    from cimnas.train import evaluate, make_optimizer, make_scheduler, train_epoch

    opt = make_optimizer(model, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    sched = make_scheduler(opt, tcfg.milestones, tcfg.gamma)
    reg = two_side_fn(tcfg.two_side_coef, tcfg.two_side_w0)
    split = ctx.splits.train
    if tcfg.max_batches is not None:
        split = split.subset(torch.arange(min(len(split), tcfg.max_batches * tcfg.batch_size)))
    for epoch in range(tcfg.epochs):
        gen = make_generator(derive_seed(ctx.cfg.seed, "retrain", label, epoch))
        stats = train_epoch(model, split, opt, batch_size=tcfg.batch_size, generator=gen, device=ctx.device,
                            regularizer=reg, desc=f"{label} epoch {epoch + 1}")
        sched.step()
        if (epoch + 1) % max(1, tcfg.epochs // 5) == 0 or epoch + 1 == tcfg.epochs:
            ctx.run.log(f"stage C {label} epoch {epoch + 1}/{tcfg.epochs}: loss {stats['loss']:.4f} "
                        f"train acc {stats['train_acc']:.4f}")
    return float(evaluate(model, ctx.splits.test, device=ctx.device))


def _uniform(ctx: Context, k: float) -> list[int]:
    d = ctx.cfg.space.d
    return [max(d, int(math.floor(b * k / d + 0.5)) * d) for b in ctx.base_widths]


def stage_retrain(ctx: Context, records: list[dict] | None = None) -> dict:
    """Stage C: retrain the best widths (and optionally Pareto points, U-kx and references)."""
    cfg, run = ctx.cfg, ctx.run
    rcfg = cfg.retrain
    if rcfg.widths is not None:
        best = {"widths": list(rcfg.widths), "source": "retrain.widths"}
    else:
        records = records if records is not None else read_jsonl(run.path("episodes.jsonl"))
        best = dict(best_record(records), source="search")
    jobs: list[tuple[str, list[int] | None, str]] = [("searched", best["widths"], "binary")]
    if rcfg.widths is None and rcfg.pareto_models > 0:
        front = pareto_front(records)
        for r in front[: rcfg.pareto_models]:
            if r["widths"] != best["widths"]:
                jobs.append((f"pareto-ep{r['episode']}", r["widths"], "binary"))
    for k in rcfg.baselines:
        jobs.append((f"U-{k:g}x", _uniform(ctx, k), "binary"))
    for ref in rcfg.references:
        jobs.append(("FP" if ref == "fp" else "8-bit", None, "float" if ref == "fp" else "kbit"))
    done_path = run.path("stage_c.json")
    results: dict = read_json(done_path) if done_path.is_file() else {}
    for label, widths, precision in jobs:
        if label in results:
            continue
        seed_everything(derive_seed(cfg.seed, "retrain-init", label))
        model = ctx.build(widths, precision=precision, **({"bits": 8} if precision == "kbit" else {}))
        t0 = time.perf_counter()
        acc = train_from_scratch(ctx, model, rcfg, label)
        entry = {"widths": list(model.widths), "precision": precision,
                 "test_accuracy": acc, "train_s": round(time.perf_counter() - t0, 2)}
        entry.update(ctx.energy(model))
        if label == "searched":
            _save_model(ctx, model, run.ckpt / "final_model.pt", entry)
            if rcfg.robustness and cfg.defects.trials > 0:
                entry["robustness"] = robustness_summary(ctx, model)
        results[label] = entry
        write_json(done_path, results)
        run.log(f"stage C {label}: test acc {acc:.4f}, energy {entry['energy_uj']:.4g} uJ")
    final = dict(results["searched"])
    final.update({"source": best["source"], "search_metrics": {k: best.get(k) for k in ("episode", "reward",
                                                                                        "accuracy", "energy_uj")}})
    final["uniform_energy_uj"] = uniform_energies(ctx)
    write_json(run.path("final.json"), final)
    return final


def uniform_energies(ctx: Context) -> dict[str, float]:
    """Energy of U-1x ... U-(ceil r_max)x (always computable, no training)."""
    out = {}
    for k in range(1, int(math.ceil(ctx.cfg.space.r_max)) + 1):
        out[f"U-{k}x"] = ctx.energy(ctx.build(_uniform(ctx, k)))["energy_uj"]
    return out


def robustness_summary(ctx: Context, model: nn.Module) -> dict:
    d = ctx.cfg.defects
    accs = mc_accuracies(ctx, model, ctx.splits.test, d.trials, derive_seed(ctx.cfg.seed, "final-mc"))
    a = np.asarray(accs)
    return {"sa0_rate": d.sa0_rate, "sa1_rate": d.sa1_rate, "sigma": d.sigma, "trials": len(accs),
            "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "p5": float(np.percentile(a, 5)), "max": float(a.max())}


def _save_model(ctx: Context, model: nn.Module, path: Path, metrics: dict) -> None:
    save_model_checkpoint(path, model, dataset_info=ctx.splits.info(), config=to_dict(ctx.cfg),
                          epoch=ctx.cfg.retrain.epochs, metrics=metrics)


# ============================================================================ entry points
def run_pipeline(cfg: HawisConfig, out: str | Path, *, resume: bool = False,
                 stages: tuple[str, ...] = ("pretrain", "search", "retrain", "report"),
                 stop_after: int | None = None) -> dict:
    """Run the requested stages into run folder `out`; returns a summary dict."""
    run = prepare_run_folder(cfg, out, resume)
    ctx = make_context(cfg, run)
    summary: dict = {"run_dir": str(run.root)}
    t0 = time.perf_counter()
    net = None
    if "pretrain" in stages or "search" in stages:
        net = stage_pretrain(ctx)
    records = None
    if "search" in stages:
        records = stage_search(ctx, net, stop_after=stop_after)
        summary["best"] = read_json(run.path("best_arch.json"))
    if "retrain" in stages:
        summary["final"] = stage_retrain(ctx, records)
    if "report" in stages:
        from cimnas.reports.hawis_plots import make_report

        summary["figures"] = make_report(run.root)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    return summary


def load_run_config(run_dir: str | Path) -> HawisConfig:
    """The resolved config stored in a run folder."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CimnasError(f"{run_dir} is not a HAWIS run folder (no config.yaml)")
    return load_config(HawisConfig, path)


__all__ = ["HawisConfig", "EnvConfig", "PHASES", "run_pipeline", "load_hawis_config", "pareto_front",
           "best_record", "stage_pretrain", "stage_search", "stage_retrain"]
