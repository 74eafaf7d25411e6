"""UAE uncertainty-aware architecture search (UAE Sec. 4) and its baselines as one pipeline.

Per episode: the LSTM controller samples a child of the quantized-CNN space -> the child is
trained for `train.epochs` on `search_train` (noise-aware when K > 0, plain for QuantNAS) ->
evaluated under K noise samples on `search_eval` -> reward = statistic of the K accuracies
(minus an optional energy term) -> REINFORCE. Children already evaluated (same architecture and
seed) come from a cache at no cost. The search stops when the controller proposes the same child
`stop_repeats` times in a row, or at the episode limit. The highest-reward child is retrained
for `final.epochs` on the full training set and evaluated on the test set under `final.samples`
Monte-Carlo noise samples (UAE Table 3: clean accuracy, mean, 95%-minimum, search time).

Baselines: QuantNAS = K 0 (plain training, clean reward), NACIM = K 1 (noise-aware training,
one noisy evaluation), UAE-M = K samples + mean, UAE-95 = K samples + p95 (configs/uae/).

Run folder: config.yaml, episodes.jsonl (append-only, one line per finished episode),
controller.pt (atomic, after every controller update), best_arch.json, final.json,
final_model.pt, figures/. `--resume` reloads the controller at its last update, replays the
logged episodes after it (the seeded controller proposes exactly the logged children; their
logged rewards are fed back without training) and continues, so a killed run loses at most the
episode in progress and ends exactly as an uninterrupted one.

`evaluate_child` is a pure function of (arch, config, data, seed) returning plain data, so it can
be shipped to a worker unchanged.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from cimnas.config import diff_configs, from_dict, to_dict, validate
from cimnas.errors import CimnasError, check
from cimnas.nn.models.uae_cnn import build_uae_cnn
from cimnas.search.agents.controller import LSTMController
from cimnas.search.uae_rewards import statistic_quantile, summarize, uae_reward
from cimnas.search.uae_space import UAEArch, UAESpaceConfig
from cimnas.uae.noise_training import NoiseConfig, evaluate_under_noise, noise_batch_context, train_epoch
from cimnas.utils.io import append_jsonl, load_checkpoint, read_jsonl, save_checkpoint, write_json
from cimnas.utils.seed import derive_seed, make_generator, resolve_device


# ---------------------------------------------------------------------------- config
@dataclass
class DatasetSection:
    name: str = "digits"
    """dataset registered in cimnas.data (digits, mnist, fashion-mnist, cifar10)"""
    data_dir: str | None = None
    search_fraction: float | None = None
    """share of the training set held out as search_eval (None = dataset default)"""
    limit: int | None = None
    """at most this many training samples (None = all)"""
    test_limit: int | None = None
    augment: bool | None = None


@dataclass
class TrainSection:
    """Training of each child during the search (UAE: 15 epochs)."""

    epochs: int = 15
    batch_size: int = 128
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    noise_aware: bool | None = None
    """None: noise-aware training iff eval.k > 0 (QuantNAS trains plain, NACIM / UAE noise-aware)"""
    init: Literal["representable", "default"] = "representable"
    """conv weight init: `default` = PyTorch's (bound 1/sqrt(fan_in)); `representable` = the same draw
    scaled up so its std is at least one fixed-point step of the layer (see `representable_init`)"""

    def validate(self) -> None:
        check(self.epochs >= 0, f"train.epochs must be >= 0, got {self.epochs}")
        check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")


@dataclass
class EvalSection:
    """Uncertainty-aware evaluation of each child (UAE Sec. 4.2)."""

    k: int = 5
    """noise samples per child (0 = clean evaluation, QuantNAS)"""
    statistic: str = "mean"
    """reward statistic of the K accuracies: mean, p95 (5th percentile), max, min, median, q<0..1>"""
    batch_size: int = 512
    max_samples: int | None = None
    """evaluate on at most this many search_eval samples (None = all)"""

    def validate(self) -> None:
        check(self.k >= 0, f"eval.k (noise samples per child) must be >= 0, got {self.k}")
        statistic_quantile(self.statistic)
        check(self.batch_size >= 1, f"eval.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class ControllerSection:
    """LSTM controller + REINFORCE (see cimnas.search.agents.controller)."""

    hidden: int = 35
    layers: int = 2
    lr: float = 0.01
    baseline_decay: float = 0.95
    entropy_weight: float = 0.0
    batch_rollouts: int = 5
    temperature: float = 1.0


@dataclass
class SearchSection:
    episodes: int = 2000
    """episode limit"""
    stop_repeats: int = 10
    """stop when the controller proposes the same child this many times in a row (0 = never)"""
    energy_weight: float = 0.0
    """reward -= energy_weight * energy_uj / energy_ref_uj (0 = the paper's reward)"""
    energy_ref_uj: float | None = None
    """energy scale of the penalty (None = energy of the space's largest child)"""
    hardware_preset: str = "mnsim-default"
    """crossbar preset of cimnas.hardware used for the per-child energy"""

    def validate(self) -> None:
        check(self.episodes >= 1, f"search.episodes must be >= 1, got {self.episodes}")
        check(self.stop_repeats >= 0, f"search.stop_repeats must be >= 0, got {self.stop_repeats}")
        check(self.energy_weight >= 0, f"search.energy_weight must be >= 0, got {self.energy_weight}")


@dataclass
class FinalSection:
    """Retraining of the chosen child and Monte-Carlo evaluation (UAE Table 3)."""

    epochs: int = 30
    samples: int = 10000
    """Monte-Carlo noise samples on the test set (UAE: 10k)"""
    lr: float | None = None
    """None = train.lr"""
    max_test_samples: int | None = None

    def validate(self) -> None:
        check(self.epochs >= 0, f"final.epochs must be >= 0, got {self.epochs}")
        check(self.samples >= 2, f"final.samples (Monte-Carlo samples) must be >= 2, got {self.samples}")


@dataclass
class UAESearchConfig:
    """A whole UAE search run (configs/uae/*.yaml)."""

    label: str = "UAE-M"
    """method name shown in Table 3 (QuantNAS, NACIM, UAE-M, UAE-95, ...)"""
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    dataset: DatasetSection = field(default_factory=DatasetSection)
    space: UAESpaceConfig = field(default_factory=UAESpaceConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    controller: ControllerSection = field(default_factory=ControllerSection)
    search: SearchSection = field(default_factory=SearchSection)
    final: FinalSection = field(default_factory=FinalSection)

    def noise_aware(self) -> bool:
        return self.train.noise_aware if self.train.noise_aware is not None else self.eval.k > 0


# ---------------------------------------------------------------------------- one child
def representable_init(model: torch.nn.Module) -> torch.nn.Module:
    """Scale each conv layer's initial weights so their std is at least one step 2^-frac of its
    fixed-point weight quantizer (in place; deterministic, no random numbers).

    PyTorch's default init has bound 1/sqrt(fan_in), e.g. 0.04 for a 7x7 conv over 12 channels:
    with 2 or 3 fraction bits (step 0.25 / 0.125) every weight of such a layer rounds to 0, the
    layer outputs 0, BN outputs its bias 0, ReLU'(0) = 0 and no gradient ever reaches the layer,
    so the child stays at chance accuracy whatever its other choices, and the search reward
    measures "some layer was dead at init" instead of accuracy or robustness. Every conv of the
    UAE CNN is followed by BatchNorm, so scaling its weights by a constant does not change the
    clean function it computes (only which values the quantizer can represent).
    """
    from cimnas.nn.quantizers import FixedPoint

    with torch.no_grad():
        for conv in getattr(model, "convs", []):
            q = conv.weight_quantizer
            if not isinstance(q, FixedPoint):
                continue
            std = float(conv.weight.std())
            if 0 < std < q.step:
                conv.weight.mul_(q.step / std)
    return model


def build_child(arch: UAEArch, space: UAESpaceConfig, in_channels: int, num_classes: int, image_size: int,
                seed: int, init: str = "representable") -> torch.nn.Module:
    """The child network of `arch`, its parameters initialised from `seed` (global RNG untouched);
    `init="representable"` applies `representable_init` to the conv weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_uae_cnn(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                              **space.model_kwargs(arch))
    return representable_init(model) if init == "representable" else model


@functools.lru_cache(maxsize=8)
def _crossbar_spec(preset: str) -> Any:
    from cimnas.hardware.crossbar import load_spec

    return load_spec(preset)


def child_energy_uj(model: torch.nn.Module, input_shape: tuple[int, int, int], preset: str) -> float | None:
    """Energy (uJ) of one inference from the shared hardware model; None if it is not installed."""
    try:
        from cimnas.hardware.energy import estimate
    except ImportError:
        return None
    from cimnas.nn.counting import trace_layers

    return float(estimate(trace_layers(model, input_shape), _crossbar_spec(preset))["energy_uj"])


def _optimizer(model: torch.nn.Module, train: TrainSection, lr: float) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=train.weight_decay)


def train_child(model: torch.nn.Module, split: Any, cfg: UAESearchConfig, epochs: int, lr: float, seed: int,
                device: torch.device, desc: str = "") -> None:
    """Plain or noise-aware (UAE Sec. 4.2) training for `epochs` epochs, seeded by `seed`."""
    opt = _optimizer(model, cfg.train, lr)
    gen = make_generator(derive_seed(seed, "order"))
    ctx = None
    if cfg.noise_aware():
        ctx = noise_batch_context(cfg.noise.sigma, cfg.noise.mode, make_generator(derive_seed(seed, "train-noise")))
    for _ in range(epochs):
        train_epoch(model, split, opt, batch_size=cfg.train.batch_size, generator=gen, device=device,
                    batch_context=ctx, progress=False)


def evaluate_child(arch: UAEArch, cfg: UAESearchConfig, splits: Any, seed: int,
                   device: torch.device | str = "cpu") -> dict:
    """Train + uncertainty-aware evaluation of one child; returns plain data (JSON-ready)."""
    device = torch.device(device)
    t0 = time.perf_counter()
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    model = build_child(arch, cfg.space, splits.in_channels, splits.num_classes, splits.image_size, seed,
                        cfg.train.init).to(device)
    energy = child_energy_uj(model, shape, cfg.search.hardware_preset)
    train_child(model, splits.search_train, cfg, cfg.train.epochs, cfg.train.lr, seed, device)
    t1 = time.perf_counter()
    clean, accs = evaluate_under_noise(model, splits.search_eval, k=cfg.eval.k, sigma=cfg.noise.sigma,
                                       mode=cfg.noise.mode, generator=make_generator(derive_seed(seed, "eval-noise")),
                                       batch_size=cfg.eval.batch_size, max_samples=cfg.eval.max_samples, device=device)
    t2 = time.perf_counter()
    return {"clean_acc": clean, "noisy": summarize(accs), "noisy_accs": accs, "energy_uj": energy,
            "params": sum(p.numel() for p in model.parameters()), "train_s": t1 - t0, "eval_s": t2 - t1}


# ---------------------------------------------------------------------------- the run folder
def _load_splits(cfg: UAESearchConfig, device: torch.device) -> Any:
    from cimnas.data import load_dataset

    d = cfg.dataset
    return load_dataset(d.name, data_dir=d.data_dir, seed=cfg.seed, search_fraction=d.search_fraction,
                        device="cpu" if device.type == "cpu" else device, limit=d.limit, test_limit=d.test_limit,
                        augment=d.augment)


#: config keys a resumed run may change: they do not alter finished episodes or their replay
RESUME_MAY_CHANGE = ("search.episodes", "final.", "progress")


def _prepare_folder(cfg: UAESearchConfig, out: Path, resume: bool) -> None:
    cfg_path = out / "config.yaml"
    if cfg_path.exists():
        if not resume:
            raise CimnasError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        saved = yaml.safe_load(cfg_path.read_text()) or {}
        diff = diff_configs(saved, to_dict(cfg))
        fixed = [k for k in diff if not k.startswith(RESUME_MAY_CHANGE)]
        if fixed:
            raise CimnasError(f"--resume with a config that differs from {cfg_path} in: {', '.join(fixed)}; "
                              "use the saved config or a new --out")
        if diff:  # a longer / shorter episode limit or other final-stage settings: record them
            from cimnas.utils.io import atomic_write_bytes

            atomic_write_bytes(cfg_path, yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
        return
    if out.exists() and any(out.iterdir()) and not resume:
        raise CimnasError(f"{out} is not empty and holds no UAE run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    from cimnas.utils.io import atomic_write_bytes

    atomic_write_bytes(cfg_path, yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())


def load_run_config(out: str | Path) -> UAESearchConfig:
    """The config a run folder was made with."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        raise CimnasError(f"{out} holds no UAE run (no config.yaml)")
    cfg = from_dict(UAESearchConfig, yaml.safe_load(path.read_text()) or {})
    validate(cfg)
    return cfg


def _make_controller(cfg: UAESearchConfig) -> LSTMController:
    c = cfg.controller
    return LSTMController(cfg.space.decision_sizes(), hidden=c.hidden, num_layers=c.layers, lr=c.lr,
                          baseline_decay=c.baseline_decay, entropy_weight=c.entropy_weight,
                          batch_rollouts=c.batch_rollouts, temperature=c.temperature,
                          seed=derive_seed(cfg.seed, "controller"))


def _save_controller(path: Path, ctrl: LSTMController, episodes: int) -> None:
    save_checkpoint(path, {"format": "cimnas-uae-controller-v1", "episodes": episodes, "controller": ctrl.state_dict()})


def _energy_ref(cfg: UAESearchConfig, splits: Any) -> float | None:
    if cfg.search.energy_ref_uj is not None:
        return cfg.search.energy_ref_uj
    big = build_child(cfg.space.largest_arch(), cfg.space, splits.in_channels, splits.num_classes,
                      splits.image_size, 0)
    return child_energy_uj(big, (splits.in_channels, splits.image_size, splits.image_size),
                           cfg.search.hardware_preset)


def run_search(cfg: UAESearchConfig, out: str | Path, *, resume: bool = False, splits: Any = None,
               on_episode: Callable[[int], None] | None = None, run_final: bool = True,
               figures: bool = True) -> dict:
    """Run (or resume) a UAE search in run folder `out`; returns final.json's content (or the
    search summary when `run_final` is False). `splits` overrides the dataset (tests);
    `on_episode(i)` is called after episode i is logged (tests simulate a kill with it)."""
    out = Path(out)
    _prepare_folder(cfg, out, resume)
    device = resolve_device(cfg.device)
    splits = splits if splits is not None else _load_splits(cfg, device)
    log_path, ckpt_path = out / "episodes.jsonl", out / "controller.pt"
    log = read_jsonl(log_path)
    ctrl = _make_controller(cfg)
    start = 0
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        ctrl.load_state_dict(ck["controller"])
        start = int(ck["episodes"])
        check(start <= len(log), f"{ckpt_path} is ahead of episodes.jsonl; the run folder is inconsistent")
    energy_ref = _energy_ref(cfg, splits) if cfg.search.energy_weight > 0 else None
    cache: dict[str, dict] = {}
    for rec in log:
        if not rec.get("cache_hit"):
            cache[rec["arch_key"]] = rec
    # replay logged episodes after the controller checkpoint: same proposals, logged rewards
    for i in range(start, len(log)):
        decisions = ctrl.sample()
        if decisions != log[i]["decisions"]:
            raise CimnasError(f"episode {i} in {log_path} does not match the controller's replay; "
                              "the run folder was edited or made by another version; start a new --out")
        if ctrl.observe(decisions, log[i]["reward"]):
            _save_controller(ckpt_path, ctrl, i + 1)
    repeats = _trailing_repeats(log)
    done = len(log) >= cfg.search.episodes or (cfg.search.stop_repeats and repeats >= cfg.search.stop_repeats)
    bar = None
    if cfg.progress and not done:
        from tqdm import tqdm

        bar = tqdm(total=cfg.search.episodes, initial=len(log), desc=f"{cfg.label} episodes")
    while not done:
        i = len(log)
        decisions = ctrl.sample()
        arch = cfg.space.arch_from_indices(decisions)
        key = arch.key()
        t0 = time.perf_counter()
        if key in cache:
            res, hit = cache[key], True
        else:
            res, hit = evaluate_child(arch, cfg, splits, derive_seed(cfg.seed, "child", key), device), False
        reward = uae_reward(res["clean_acc"], res["noisy_accs"], cfg.eval.statistic, res["energy_uj"],
                            cfg.search.energy_weight, energy_ref)
        rec = {"episode": i, "arch_key": key, "arch": arch.to_dict(), "decisions": decisions, "reward": reward,
               "clean_acc": res["clean_acc"], "noisy": res["noisy"], "noisy_accs": res["noisy_accs"],
               "energy_uj": res["energy_uj"], "params": res["params"], "train_s": res["train_s"],
               "eval_s": res["eval_s"], "time_s": 0.0 if hit else time.perf_counter() - t0, "cache_hit": hit}
        append_jsonl(log_path, rec)
        log.append(rec)
        if not hit:
            cache[key] = rec
        if ctrl.observe(decisions, reward):
            _save_controller(ckpt_path, ctrl, i + 1)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{reward:.3f}", best=f"{max(r['reward'] for r in log):.3f}", cache=hit)
        repeats = _trailing_repeats(log)
        done = len(log) >= cfg.search.episodes or bool(cfg.search.stop_repeats and repeats >= cfg.search.stop_repeats)
        if on_episode is not None:
            on_episode(i)
    if bar is not None:
        bar.close()
    best = max(log, key=lambda r: r["reward"])
    stop = "repeats" if cfg.search.stop_repeats and repeats >= cfg.search.stop_repeats else "episode_limit"
    summary = {"label": cfg.label, "episodes": len(log), "unique_children": len(cache), "stop_reason": stop,
               "cache_hits": sum(1 for r in log if r["cache_hit"]),
               "search_time_s": sum(r["time_s"] for r in log), "best_episode": best["episode"],
               "best_reward": best["reward"], "arch": best["arch"], "arch_key": best["arch_key"],
               "search_clean_acc": best["clean_acc"], "search_noisy": best["noisy"], "energy_uj": best["energy_uj"]}
    write_json(out / "best_arch.json", summary)
    if not run_final:
        return summary
    result = final_evaluation(cfg, out, splits=splits)
    if figures:
        from cimnas.uae.report import make_figures

        make_figures(out)
    return result


def _trailing_repeats(log: list[dict]) -> int:
    """How many of the last episodes proposed the same child as the very last one."""
    n = 0
    for rec in reversed(log):
        if rec["arch_key"] != log[-1]["arch_key"]:
            break
        n += 1
    return n


def final_evaluation(cfg: UAESearchConfig, out: str | Path, *, splits: Any = None) -> dict:
    """Retrain the best child for `final.epochs` on the full training set (plain or noise-aware as
    during the search) and evaluate it on the test set under `final.samples` Monte-Carlo noise
    samples; writes final.json and final_model.pt (UAE Table 3 layout)."""
    out = Path(out)
    from cimnas.utils.io import read_json

    best = read_json(out / "best_arch.json")
    arch = UAEArch.from_dict(best["arch"])
    device = resolve_device(cfg.device)
    splits = splits if splits is not None else _load_splits(cfg, device)
    seed = derive_seed(cfg.seed, "final", arch.key())
    model = build_child(arch, cfg.space, splits.in_channels, splits.num_classes, splits.image_size, seed,
                        cfg.train.init).to(device)
    t0 = time.perf_counter()
    train_child(model, splits.train, cfg, cfg.final.epochs, cfg.final.lr or cfg.train.lr, seed, device)
    t1 = time.perf_counter()
    clean, accs = evaluate_under_noise(model, splits.test, k=cfg.final.samples, sigma=cfg.noise.sigma,
                                       mode=cfg.noise.mode, generator=make_generator(derive_seed(seed, "mc")),
                                       batch_size=cfg.eval.batch_size, max_samples=cfg.final.max_test_samples,
                                       device=device, progress=cfg.progress)
    t2 = time.perf_counter()
    stats = summarize(accs)
    result = {"label": cfg.label, "k": cfg.eval.k, "statistic": cfg.eval.statistic, "noise_aware": cfg.noise_aware(),
              "sigma": cfg.noise.sigma, "noise_mode": cfg.noise.mode, "arch_key": arch.key(), "arch": arch.to_dict(),
              "clean_acc": clean, "mean": stats["mean"], "p95": stats["p95"], "std": stats["std"],
              "min": stats["min"], "max": stats["max"], "mc_samples": len(accs),
              "search_time_s": best["search_time_s"], "search_time_h": best["search_time_s"] / 3600,
              "episodes": best["episodes"], "unique_children": best["unique_children"],
              "stop_reason": best["stop_reason"], "energy_uj": best["energy_uj"],
              "final_train_s": t1 - t0, "final_eval_s": t2 - t1}
    save_checkpoint(out / "final_model.pt", {
        "format": "cimnas-checkpoint-v1", "arch": model.arch_meta, "state_dict": model.state_dict(),
        "dataset": {"name": splits.name, "in_channels": splits.in_channels, "image_size": splits.image_size,
                    "num_classes": splits.num_classes},
        "config": to_dict(cfg), "epoch": cfg.final.epochs, "optimizer": None,
        "metrics": {k: v for k, v in result.items() if isinstance(v, int | float)}})
    write_json(out / "final.json", result)
    return result
