"""What every HAWIS stage shares: the run folder (opened with the pipeline's resume rules), the data, the device,
the hardware spec, the width space, and one model builder that gives every binarized model (stages A, B, C) the
config's re-factorization options (thermometer input by default) and the FP / 8-bit references their float /
8-bit input.

Size limit: before anything is trained, every model the config can build (the super-net at r_max, the U-kx
baselines, retrain.widths, the references) is built on the `meta` device (no memory) and its parameters counted;
more than `CIMNAS_MAX_PARAMS` (environment variable, default 2e8 parameters = 0.8 GB of float32 weights) is a
one-line error with the estimate.

Your own network (`model.name` PATH.py:FACTORY, torchvision:NAME or timm:NAME): its coupled channel groups are
derived once (`Context.groups`, cimnas.nn.groups) and every model the stages build is the converted network
(`cimnas.nn.zoo.external_model`, precision per layer from `model.rules`) wrapped as a `GroupSlimmable`
sliced to the widths asked for (one per searchable group); the width space is `group_space` (r_max <= 1: the
built channels are the super-net).

Under torchrun (`cimnas hawis pretrain` / `retrain`) rank 0 holds the run folder; every other rank builds the
same context (same data, same seeds) around a `Follower`, which writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimnas import distributed
from cimnas.config import diff_configs, load_config, to_dict
from cimnas.data import load_from_config
from cimnas.errors import CimnasError, check
from cimnas.hardware import montecarlo
from cimnas.hardware.aging import device_models
from cimnas.hardware.align import ArchProbe, aligned_choices
from cimnas.hardware.defects import DefectConfig
from cimnas.hardware.energy import estimate_model
from cimnas.limits import check_params
from cimnas.nn.groups import ChannelGroups, derive_groups
from cimnas.nn.models import build_model
from cimnas.nn.slimmable import GroupSlimmable, group_space
from cimnas.nn.widths import WidthSpace, round_channels
from cimnas.nn.zoo import external_model
from cimnas.pipelines.hawis.config import RESUMABLE_ALWAYS, RESUMABLE_BEFORE_C, HawisConfig
from cimnas.runs import RunFolder

KIND = "hawis"

REFERENCE_PRECISION = {"fp": ("FP", "float"), "8bit": ("8-bit", "kbit")}


def _admitted(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)


def open_run(cfg: HawisConfig, out: str | Path, resume: bool) -> RunFolder:
    """RunFolder.open(kind "hawis") plus the stage-dependent resume rules of `config.py`; a resume with an
    admitted change rewrites config.yaml (`record_resume`, so the folder always holds the config its later stages
    used)."""
    run = RunFolder.open(out, KIND, cfg, resume=resume, resumable=RESUMABLE_ALWAYS + RESUMABLE_BEFORE_C,
                         config_cls=HawisConfig)
    try:
        if run.resumed:
            new = to_dict(cfg)
            diff = diff_configs(run.stored_config(HawisConfig), new)
            late = [k for k in diff if _admitted(k, RESUMABLE_BEFORE_C) and not _admitted(k, RESUMABLE_ALWAYS)]
            check(not late or not run.has("stage_c.json"), f"cannot resume {run.root}: stage C has started, so "
                  f"{', '.join(late)} can no longer change; resume with the original config or use a new --out folder")
            if "search.episodes" in diff:
                done = len(run.records("episodes.jsonl")) if run.has("episodes.jsonl") else 0
                run.check_extends("search.episodes", cfg.search.episodes, done, "episodes")
    except BaseException:
        run.abandon()
        raise
    return run


def record_resume(run: RunFolder, cfg: HawisConfig) -> None:
    """After every check of a resume (open_run's, make_context's): store the config with its admitted changes and
    log them (validate, then write)."""
    diff = diff_configs(run.stored_config(HawisConfig), to_dict(cfg)) if run.resumed else []
    if diff:
        run.write_config(to_dict(cfg))
        run.log(f"resume with changed {', '.join(diff)}", echo=False)


class Follower:
    """The run folder as a rank other than 0 sees it under torchrun: where it is (to load a checkpoint rank 0
    points to) and a silent log; no writes and no reads of anything rank 0 may be writing (rank 0 decides
    and `distributed.share`s what the stages need)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def ckpt(self) -> Path:
        return self.root / "checkpoints"

    def log(self, msg: str, echo: bool = True) -> None:
        """Rank 0 logs."""


@dataclass
class Context:
    """What every stage needs: config, run folder, data, device, hardware spec, width space."""

    cfg: HawisConfig
    run: RunFolder | Follower
    splits: Any
    device: torch.device
    spec: Any
    space: WidthSpace
    input_shape: tuple[int, int, int]
    groups: ChannelGroups | None = None  # your own network's channel groups (None: a cimnas model)

    @property
    def base_widths(self) -> list[int]:
        return list(self.space.base_widths)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def build(self, widths: list[int] | None, precision: str = "binary", *, meta: bool = False) -> nn.Module:
        """A model of the configured family: binarized with the config's refactor options, or an FP / k-bit
        reference (which keeps its float / k-bit input: re-factorization applies to binary models only).
        `meta`: built on the meta device (no memory, no RNG draw), to count parameters or trace shapes."""
        m = self.cfg.model
        if m.external:
            return self._build_external(widths, precision, meta)
        kw = dict(in_channels=self.splits.in_channels, num_classes=self.splits.num_classes,
                  image_size=self.splits.image_size, widths=widths, precision=precision,
                  bits=8 if precision == "kbit" else m.bits,
                  refactor=m.refactor_dict() if precision == "binary" else None, **m.build_options())
        if meta:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                return build_model(m.name, **kw)
        return build_model(m.name, **kw).to(self.device)

    def external(self, precision: str, *, meta: bool = False) -> nn.Module:
        """Your own network, freshly built and converted: every layer at `precision` unless `model.rules` says
        otherwise (the FP / 8-bit references are `float` / `kbit:8`). Every model starts from `model.weights`
        when given (not on the meta device)."""
        m = self.cfg.model
        kw = dict(in_channels=self.splits.in_channels, num_classes=self.splits.num_classes,
                  image_size=self.splits.image_size, rules=m.rules,
                  default={"binary": "binary", "kbit": "kbit:8", "float": "float"}[precision])
        if meta:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                return external_model(m.name, **kw)
        return external_model(m.name, weights=m.weights, **kw)

    def _build_external(self, widths: list[int] | None, precision: str, meta: bool) -> GroupSlimmable:
        """`external(precision)` sliced per channel group to `widths` (None: as built)."""
        if meta:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                net = GroupSlimmable(self.external(precision, meta=True), self.input_shape, self.groups)
        else:
            net = GroupSlimmable(self.external(precision), self.input_shape, self.groups).to(self.device)
        if widths is not None:
            net.set_widths(list(widths))
        return net

    def check_size(self, widths: list[int] | None, precision: str, what: str) -> int:
        """Parameters of a model (counted on the meta device); over the limit -> one-line error."""
        n = sum(p.numel() for p in self.build(widths, precision, meta=True).parameters())
        return check_params(n, what)

    def energy(self, model: nn.Module) -> dict:
        est = estimate_model(model, self.input_shape, self.spec)
        return {"energy_uj": float(est["energy_uj"]), "latency_us": float(est["latency_us"]),
                "crossbars": int(est["crossbars"]), "biops": int(est["biops"]), "flops": int(est["flops"])}

    def uniform(self, k: float) -> list[int]:
        """U-kx widths: every base width times k, rounded as in Eq. 8 (not clipped to the space)."""
        return list(self.space.uniform_widths(float(k), clip=False).widths)


def make_context(cfg: HawisConfig, run: RunFolder | Follower) -> Context:
    """Load the data and the hardware spec, build the width space, check every model's size up front.
    The device is this rank's under torchrun (`distributed.init`), the configured one otherwise."""
    device = distributed.init(cfg.device)
    splits = load_from_config(cfg.data, cfg.seed, device)
    spec = cfg.hardware.spec()
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    ctx = Context(cfg, run, splits, device, spec, WidthSpace((1,)), shape)
    s = cfg.space
    if cfg.model.external:  # the channel groups, traced once on the float network (the structure is the same)
        ctx.groups = derive_groups(ctx.external("float"), shape)
    ctx.check_size(None, "float", "the 1x float model")
    probe = ctx.build(None, precision="float", meta=True)
    check(hasattr(probe, "base_widths"), f"model {cfg.model.name!r} has no searchable widths; HAWIS needs a "
          "width-searchable model (e.g. resnet20, mlp)")
    if cfg.model.external:
        ctx.space = group_space(probe, s.r_min, s.r_max, s.d)
    else:
        ctx.space = WidthSpace(tuple(int(w) for w in probe.base_widths), r_min=s.r_min, r_max=s.r_max, d=s.d)
    if cfg.search.aligned:
        ctx.space = aligned_space(ctx)
    ctx.check_size(list(ctx.space.max_widths().widths), "binary", f"the super-net (space.r_max={s.r_max:g})")
    r = cfg.retrain
    if r.widths is not None:
        check_multiples(r.widths, ctx.space.n_steps, s.d, "retrain.widths")
        ctx.check_size(list(r.widths), "binary", "retrain.widths")
    for k in r.baselines:
        ctx.check_size(ctx.uniform(k), "binary", f"the U-{k:g}x baseline")
    for ref in r.references:
        ctx.check_size(None, REFERENCE_PRECISION[ref][1], f"the {REFERENCE_PRECISION[ref][0]} reference")
    if distributed.is_rank0() and isinstance(run, RunFolder):
        run.write_result("space.json", ctx.space.to_dict())
    return ctx


def aligned_space(ctx: Context) -> WidthSpace:
    """`ctx.space` restricted to crossbar-filling widths on `ctx.spec` (`search.aligned: true`)."""
    sp = ctx.space
    allowed = aligned_choices(arch_probe(ctx), sp.min_widths().widths, sp.max_widths().widths, sp.d)
    return WidthSpace(sp.base_widths, sp.r_min, sp.r_max, sp.d, allowed=tuple(tuple(a) for a in allowed))


def arch_probe(ctx: Context) -> ArchProbe:
    """The run's binarized model family on its crossbar spec, for `cimnas.hardware.align` (energy of any widths)."""
    m = ctx.cfg.model
    return ArchProbe(m.name, ctx.spec, in_channels=ctx.splits.in_channels, num_classes=ctx.splits.num_classes,
                     image_size=ctx.splits.image_size, precision="binary", refactor=m.refactor_dict(),
                     **m.build_options())


def check_multiples(widths: list[int], n: int, d: int, key: str) -> None:
    """A user-given width vector: `n` positive multiples of d."""
    check(len(widths) == n, f"{key} has {len(widths)} entries; the model has {n} searchable layers")
    for i, w in enumerate(widths):
        check(w >= 1 and w % d == 0, f"{key}[{i}] = {w} is not a positive multiple of space.d={d}; "
              f"use {round_channels(w, d)}")


def mc_accuracies(ctx: Context, model: nn.Module, split: Any, trials: int, seed: int) -> list[float]:
    """Accuracies of `model` over `trials` defect samples (cimnas.hardware.montecarlo), under `defects.device`
    read `defects.device_time_s` after programming when set (stage B's mc_* rewards and stage C)."""
    d = ctx.cfg.defects
    defects = DefectConfig(sa0_rate=d.sa0_rate, sa1_rate=d.sa1_rate, variation_sigma=d.variation_sigma)
    if d.device == "ideal":
        out = montecarlo.evaluate_trials(model, split, ctx.spec, defects, trials, seed, device=ctx.device)
    else:  # the device preset's models around the defects (cimnas.hardware.aging.chip_models)
        preset, models = device_models(d.device, d.device_time_s, defects)
        out = montecarlo.evaluate_trials(model, split, ctx.spec, models, trials, seed, device=ctx.device,
                                         periphery=preset.periphery)
    return [float(a) for a in out.accs]


def load_run_config(run_dir: str | Path) -> HawisConfig:
    """The resolved config stored in a run folder."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CimnasError(f"{run_dir} is not a HAWIS run folder (no config.yaml)")
    return load_config(HawisConfig, path)
