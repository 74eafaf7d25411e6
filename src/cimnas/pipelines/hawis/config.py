"""HAWIS root config (configs/hawis/*.yaml) in the shared vocabulary of `cimnas.config`.

Sections: `data` (DataConfig), `model` (HawisModelConfig: ModelConfig with thermometer input on by default, as in
the paper), `space` (Eq. 7/8), `pretrain` (stage A, an OptimConfig), `search` (stage B: agent + EnvConfig),
`retrain` (stage C, an OptimConfig), `defects`, `hardware`, `report`. Everything, the agent's own config dataclass
included, is checked when the config is loaded, before a run folder is touched. `model.name` may also name your
own network (PATH.py:FACTORY, torchvision:NAME, timm:NAME): the search then chooses one width per coupled channel
group of it (cimnas.nn.groups), up to its built channels (space.r_max <= 1).

Resume (RunFolder.open + `resume_changes`): the stored config must equal the given one except
- always: `pretrain.progress`, `retrain.progress`, `report.*` (they change no computed result);
- `search.episodes`: may grow (never below the episodes already done) while stage C has not started;
- `search.rerank_top`: while stage C has not started (the re-rank reruns what it lacks, stage_b.rerank);
- `retrain.*`: while stage C has not started (no stage_c.json yet), since nothing computed depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cimnas.config import DataConfig, ModelConfig, OptimConfig, check_device, from_dict, load_config
from cimnas.config import validate as validate_config
from cimnas.data import dataset_spec
from cimnas.errors import CimnasError, check
from cimnas.hardware.crossbar import HardwareConfig
from cimnas.nn.models import MODELS
from cimnas.nn.refactor import RefactorOptions
from cimnas.nn.zoo import is_external, parse_source
from cimnas.search.agents import AGENT_CONFIGS, AGENTS
from cimnas.search.env import EnvConfig

#: Keys that may differ on --resume at any time.
RESUMABLE_ALWAYS = ("pretrain.progress", "retrain.progress", "report.", "tensorboard")
#: Keys that may differ on --resume only while stage C has not started (search.episodes: only upwards).
RESUMABLE_BEFORE_C = ("search.episodes", "search.rerank_top", "retrain.")
#: Largest space.r_max (and U-kx multiplier): the paper uses 5, and 16x widths are far past any budget.
MAX_RATIO = 16.0
REFACTOR_FIELDS = ("topology_mod", "thermometer", "thermometer_levels")


@dataclass
class HawisModelConfig(ModelConfig):
    """The float baseline A_fp that re-factorization binarizes. HAWIS feeds a thermometer code of the input
    (authors' code: 32 levels per channel); small datasets may use fewer (`thermometer_levels`).
    `options`: further build_model keywords; `options.refactor` the remaining RefactorOptions switches
    (binarize_first, binarize_last). The pipeline chooses widths and precision itself."""

    thermometer: bool = True

    @property
    def external(self) -> bool:
        """Your own network (`name` PATH.py:FACTORY, torchvision:NAME or timm:NAME, cimnas.nn.zoo): the search
        runs over its coupled channel groups (cimnas.nn.groups); `rules` sets per-layer precisions
        (cimnas.convert), `weights` a local state_dict file every model starts from."""
        return is_external(self.name)

    def validate(self) -> None:
        super().validate()
        if self.external:
            parse_source(self.name)  # the form only: the factory runs when the run starts
            check(not self.thermometer, f"model.thermometer applies to cimnas's own models; for {self.name} set "
                  "model.thermometer: false (your first layer reads the input as it is)")
            check(not self.refactor, "model.refactor is not wired into the HAWIS search of your network (the "
                  "group search slices the model as it is built); it applies to cimnas train")
            check(not self.options, f"model.options ({', '.join(sorted(self.options))}) are build arguments of "
                  "cimnas's own models; for your network use model.rules (per-layer precision) and model.weights")
        check(self.precision == "binary", f"model.precision is {self.precision!r}: HAWIS searches fully binarized "
              "networks (precision: binary); the FP / 8-bit references are retrain.references")
        check(self.widths is None and self.width_mult == 1.0, "model.widths / model.width_mult do not apply to "
              "HAWIS (the search chooses widths); use retrain.widths or retrain.baselines")
        extra = self.options.get("refactor")
        if extra is not None:
            check(isinstance(extra, dict), "model.options.refactor must be a mapping, e.g. {binarize_last: true}")
            dup = [k for k in REFACTOR_FIELDS if k in extra]
            check(not dup, f"model.options.refactor.{dup[0] if dup else ''} is a model key: set model."
                  f"{dup[0] if dup else ''} instead")
            RefactorOptions.from_any(self.refactor_dict())

    def refactor_dict(self) -> dict:
        """The RefactorOptions of the binarized models (stages A, B and C)."""
        out = {k: getattr(self, k) for k in REFACTOR_FIELDS}
        out.update(self.options.get("refactor") or {})
        return out

    def build_options(self) -> dict:
        """build_model keywords besides the refactor options."""
        return {k: v for k, v in self.options.items() if k != "refactor"}


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
        check(self.r_max <= MAX_RATIO, f"space.r_max must be <= {MAX_RATIO:g}, got {self.r_max} (the paper uses 5)")
        check(1 <= self.d <= 1024, f"space.d (channel granularity) must be in 1..1024, got {self.d}")


@dataclass
class PretrainConfig(OptimConfig):
    """Stage A: slimmable (sandwich-rule) pretraining of the super-net, two-side regularization (Eq. 4)."""

    epochs: int = 120
    milestones: list[int] = field(default_factory=lambda: [60, 90])
    regularizer: Literal["none", "l2", "two_side"] = "two_side"
    n_random: int = 2  # random non-uniform sub-nets per step besides the largest and smallest
    inplace_distill: bool = False  # smaller sub-nets learn the largest's soft predictions (US-Nets)
    distill_warmup: int = 0  # with inplace_distill: the first this many epochs train every sub-net on the labels
    from_run: str | None = None  # a finished HAWIS run folder whose stage-A super-net to start from

    def validate(self) -> None:
        super().validate()
        check(0 <= self.n_random <= 64, f"pretrain.n_random must be in 0..64, got {self.n_random}")
        check(0 <= self.distill_warmup <= max(self.epochs, 0), f"pretrain.distill_warmup must be in "
              f"0..pretrain.epochs ({self.epochs}), got {self.distill_warmup}")


@dataclass
class SearchConfig:
    """Stage B: agent + environment."""

    episodes: int = 600  # HAWIS: 600
    agent: str = "ddpg"  # ddpg | random
    agent_options: dict = field(default_factory=dict)  # fields of the agent's config (e.g. warmup_episodes)
    env: EnvConfig = field(default_factory=EnvConfig)
    aligned: bool = False  # offer only crossbar-filling widths (cimnas.hardware.align.aligned_choices, space.json)
    rerank_top: int = 0  # > 0: re-score the K best unique candidates on the final super-net, choose among them

    def validate(self) -> None:
        check(1 <= self.episodes <= 1_000_000, f"search.episodes must be in 1..1000000, got {self.episodes}")
        check(isinstance(self.rerank_top, int) and 0 <= self.rerank_top <= 1_000_000, "search.rerank_top must be "
              f"an integer in 0..1000000 (0 = off), got {self.rerank_top!r}")
        AGENTS.get(self.agent)  # unknown name -> one-line error listing the agents
        agent_cfg = from_dict(AGENT_CONFIGS[self.agent], dict(self.agent_options),
                              prefix="search.agent_options.")
        try:
            validate_config(agent_cfg)
        except CimnasError as e:
            raise CimnasError(f"search.agent_options ({self.agent}): {e}") from e


@dataclass
class DefectsConfig:
    """Device defects for Monte-Carlo robustness (HAWIS II-D; rates from fabrication data)."""

    sa0_rate: float = 0.0175  # stuck-at-0 (stuck at low resistance / high conductance)
    sa1_rate: float = 0.0904  # stuck-at-1 (stuck at high resistance / low conductance)
    variation_sigma: float = 0.0  # lognormal resistance variation theta ~ N(0, sigma^2) (Eq. 3)
    trials: int = 20  # Monte-Carlo samples for the final robustness summary
    device: str = "ideal"  # device preset on top of the defects (`cimnas devices`: reram-wan2022, pcm-joshi2020)
    device_time_s: float = 0.0  # seconds since programming at which the chip is read (drift, relaxation)

    def validate(self) -> None:
        check(0 <= self.sa0_rate <= 1 and 0 <= self.sa1_rate <= 1, "defect rates must be in [0, 1]")
        check(self.device_time_s >= 0, f"defects.device_time_s must be >= 0, got {self.device_time_s}")
        from cimnas.hardware.devices import load_device

        load_device(self.device)  # an unknown preset is refused at load time
        check(0 <= self.variation_sigma <= 10,
              f"defects.variation_sigma must be in [0, 10], got {self.variation_sigma}")
        check(0 <= self.trials <= 100_000, f"defects.trials must be in 0..100000, got {self.trials}")


@dataclass
class RetrainConfig(OptimConfig):
    """Stage C: train the searched widths from scratch on `search_train`; `val_accuracy` on the held-out
    `search_eval` (for any calibration or model selection), `test_accuracy` once per model (the final number).
    HAWIS Sec. IV: 400 epochs, lr 0.1 x0.1 at {200, 260, 320}, SGD momentum 0.9, two-side regularization."""

    epochs: int = 400
    milestones: list[int] = field(default_factory=lambda: [200, 260, 320])
    regularizer: Literal["none", "l2", "two_side"] = "two_side"
    widths: list[int] | None = None  # retrain these widths instead of the search's best
    pareto_models: int = 0  # also retrain up to this many Pareto-front candidates
    baselines: list[float] = field(default_factory=list)  # U-kx baselines trained with the same budget
    references: list[str] = field(default_factory=list)  # "fp" and/or "8bit" reference models
    robustness: bool = True  # Monte-Carlo robustness of the final model under `defects`
    seeds: int = 1  # train every stage-C model with training seeds 0..seeds-1 (seed 0: the single-seed run)
    aligned_baseline: bool = False  # also train the aligned-uniform net of the searched net's energy (hardware.align)

    def validate(self) -> None:
        super().validate()
        check(isinstance(self.seeds, int) and 1 <= self.seeds <= 100,
              f"retrain.seeds must be an integer in 1..100, got {self.seeds!r}")
        check(0 <= self.pareto_models <= 1000, f"retrain.pareto_models must be in 0..1000, got {self.pareto_models}")
        for k in self.baselines:
            check(0 < k <= MAX_RATIO, f"retrain.baselines must be width multipliers in (0, {MAX_RATIO:g}], got {k}")
        check(len(set(self.baselines)) == len(self.baselines), "retrain.baselines lists a multiplier twice")
        for r in self.references:
            check(r in ("fp", "8bit"), f"retrain.references: unknown {r!r}; use fp and/or 8bit")
        check(len(set(self.references)) == len(self.references), "retrain.references lists a reference twice")


@dataclass
class ReportConfig:
    fig4_layer: int = 1  # 0-based searchable layer shown in the Fig. 4-style plot (paper: 2nd layer)
    compare_uniform: float = 4.0  # U-kx shown next to the searched widths in the Fig. 5-style plot

    def validate(self) -> None:
        check(self.fig4_layer >= 0, f"report.fig4_layer must be >= 0, got {self.fig4_layer}")
        check(0 < self.compare_uniform <= MAX_RATIO,
              f"report.compare_uniform must be in (0, {MAX_RATIO:g}], got {self.compare_uniform}")


@dataclass
class HawisConfig:
    """Root config of a HAWIS run (configs/hawis/*.yaml)."""

    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: HawisModelConfig = field(default_factory=HawisModelConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    defects: DefectsConfig = field(default_factory=DefectsConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tensorboard: bool = False  # mirror stage A epochs and stage B episodes to RUN/tensorboard (the tensorboard extra)

    def validate(self) -> None:
        check_device(self.device)
        # names and seeds are checked here, before `RunFolder.open` writes the folder: a refusal after it would
        # leave a run folder of the bad config that blocks the corrected command (cimnas train does the same)
        dataset_spec(self.data.name, self.data.options)  # the name and its options (no file is read)
        if not self.model.external:
            MODELS.get(self.model.name)
        check(not (self.search.aligned and self.model.external), f"search.aligned needs a registered model (its "
              f"crossbar-filling widths come from the zoo's layout), not {self.model.name!r}; drop search.aligned")
        check(not (self.retrain.aligned_baseline and self.model.external), "retrain.aligned_baseline needs a "
              f"registered model (the aligned-uniform net comes from the zoo's layout), not {self.model.name!r}")
        self.hardware.spec()  # the preset and its fields
        if self.search.env.reward_accuracy != "clean":
            check(self.defects.sa0_rate + self.defects.sa1_rate > 0 or self.defects.variation_sigma > 0,
                  f"search.env.reward_accuracy={self.search.env.reward_accuracy} needs a defect model: set "
                  "defects.sa0_rate / sa1_rate / variation_sigma or use reward_accuracy: clean")


def load_hawis_config(path: str | Path | None, overrides: list[str] | None = None) -> HawisConfig:
    """YAML + overrides -> a checked HawisConfig (every section, the agent's options included)."""
    return load_config(HawisConfig, path, overrides)
