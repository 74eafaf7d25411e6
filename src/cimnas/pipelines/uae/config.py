"""UAE config sections, in the shared vocabulary (cimnas.config).

Training sections subclass `OptimConfig` only to change defaults (UAE children: Adam, lr 1e-3, 15 epochs) and add
`noise_aware` / `init`; data sections are `DataConfig`; root configs carry `seed` and `device`. The noise is the
hardware model's Gaussian defect (`cimnas.hardware.defects.GaussianNoise`, modes `NOISE_MODES`).

Statistics: UAE's "95%-minimum" is `p5` (the 5th percentile, `cimnas.stats.summarize`); the old name `p95` is
accepted with the same meaning and written as `p5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cimnas.config import DataConfig, OptimConfig
from cimnas.errors import check
from cimnas.hardware.crossbar import HardwareConfig
from cimnas.hardware.defects import GaussianNoise, check_gaussian
from cimnas.search.uae_rewards import canonical_statistic, statistic_quantile
from cimnas.search.uae_space import UAESpaceConfig

#: Largest Monte-Carlo sample count a config may ask for (the work limit CIMNAS_MAX_MC_WORK is checked too, once
#: the model size is known).
MAX_SAMPLES = 10_000_000


@dataclass
class NoiseConfig:
    """Additive Gaussian weight noise N(0, sigma) of UAE Eq. 1 (the hardware model's `gaussian` defect)."""

    gaussian_sigma: float = 0.04  # std of the device noise (weight units in `absolute` mode; UAE: 0.04)
    gaussian_mode: Literal["absolute", "relative", "bitsliced"] = "absolute"  # cimnas.hardware.defects.NOISE_MODES
    cell_bits: int = 4  # bitsliced mode: bits per device
    weight_bits: int = 8  # bitsliced mode, float layers: bits of the integer code
    device: str = "ideal"  # device preset (`cimnas devices`) acting on the child mapped onto the `hardware` section
    device_time_s: float = 0.0  # seconds since programming at which the chip is read (drift, relaxation)

    def validate(self) -> None:
        check_gaussian(self.gaussian_sigma, self.gaussian_mode, self.cell_bits, self.weight_bits, "noise.")
        check(self.device_time_s >= 0, f"noise.device_time_s must be >= 0, got {self.device_time_s}")
        check(self.device == "ideal" or self.gaussian_mode != "bitsliced", "noise.gaussian_mode bitsliced counts "
              "noise.cell_bits per device, but with noise.device the crossbar's bits_per_cell hold the weights: use "
              "absolute or relative (or noise.gaussian_sigma: 0 for the device alone)")
        from cimnas.hardware.devices import load_device

        load_device(self.device)  # an unknown preset is refused at load time

    def defect(self) -> GaussianNoise:
        return GaussianNoise(self.gaussian_sigma, self.gaussian_mode, cell_bits=self.cell_bits,
                             weight_bits=self.weight_bits)


def check_samples(value: Any, key: str, minimum: int = 1) -> None:
    check(isinstance(value, int) and minimum <= value <= MAX_SAMPLES,
          f"{key} must be an integer in {minimum}..{MAX_SAMPLES:,}, got {value!r}")


# ============================================================================ search
@dataclass
class ChildTrainConfig(OptimConfig):
    """Training of each child during the search (UAE: Adam, lr 1e-3, 15 epochs)."""

    epochs: int = 15
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["multistep", "cosine", "constant"] = "constant"
    regularizer: Literal["none", "l2", "two_side"] = "none"
    progress: bool = False
    noise_aware: bool | None = None  # None: noise-aware iff eval.k > 0 (QuantNAS plain, NACIM / UAE noise-aware)
    init: Literal["representable", "default"] = "representable"  # conv init (cimnas.pipelines.uae.child)


@dataclass
class EvalSection:
    """Uncertainty-aware evaluation of each child (UAE Sec. 4.2)."""

    k: int = 5  # noise samples per child (0 = clean evaluation, QuantNAS)
    statistic: str = "mean"  # reward statistic: mean, p5 (95%-minimum; alias p95), max, min, median, q<0..1>
    batch_size: int = 512
    max_samples: int | None = None  # evaluate on at most this many search_eval samples (None = all)

    def __post_init__(self) -> None:
        if isinstance(self.statistic, str):
            self.statistic = canonical_statistic(self.statistic)

    def validate(self) -> None:
        check(isinstance(self.k, int) and 0 <= self.k <= MAX_SAMPLES,
              f"eval.k (noise samples per child) must be an integer in 0..{MAX_SAMPLES:,}, got {self.k}")
        statistic_quantile(self.statistic)
        check(self.batch_size >= 1, f"eval.batch_size must be >= 1, got {self.batch_size}")
        check(self.max_samples is None or self.max_samples >= 1,
              f"eval.max_samples must be >= 1 (or null), got {self.max_samples}")


@dataclass
class ControllerSection:
    """LSTM controller + REINFORCE (cimnas.search.agents.controller)."""

    hidden: int = 35
    layers: int = 2
    lr: float = 0.01
    baseline_decay: float = 0.95
    entropy_weight: float = 0.0
    batch_rollouts: int = 5
    temperature: float = 1.0

    def validate(self) -> None:
        check(1 <= self.hidden <= 4096, f"controller.hidden must be in 1..4096, got {self.hidden}")
        check(1 <= self.layers <= 16, f"controller.layers must be in 1..16, got {self.layers}")
        check(0 < self.lr <= 10, f"controller.lr must be in (0, 10], got {self.lr}")
        check(0 <= self.baseline_decay < 1, f"controller.baseline_decay must be in [0, 1), got {self.baseline_decay}")
        check(self.entropy_weight >= 0, f"controller.entropy_weight must be >= 0, got {self.entropy_weight}")
        check(self.batch_rollouts >= 1, f"controller.batch_rollouts must be >= 1, got {self.batch_rollouts}")
        check(self.temperature > 0, f"controller.temperature must be > 0, got {self.temperature}")


@dataclass
class SearchSection:
    episodes: int = 2000  # episode limit
    stop_repeats: int = 10  # stop when the same child is proposed this many times in a row (0 = never)
    energy_weight: float = 0.0  # reward -= energy_weight * energy_uj / energy_ref_uj (0 = the paper's reward)
    energy_ref_uj: float | None = None  # energy scale of the penalty (None = the space's largest child)

    def validate(self) -> None:
        check(1 <= self.episodes <= 10_000_000, f"search.episodes must be in 1..10,000,000, got {self.episodes}")
        check(self.stop_repeats >= 0, f"search.stop_repeats must be >= 0, got {self.stop_repeats}")
        check(self.energy_weight >= 0, f"search.energy_weight must be >= 0, got {self.energy_weight}")
        check(self.energy_ref_uj is None or self.energy_ref_uj > 0,
              f"search.energy_ref_uj must be > 0 (or null), got {self.energy_ref_uj}")


@dataclass
class FinalSection:
    """Retraining of the chosen child and Monte-Carlo evaluation (UAE Table 3)."""

    epochs: int = 30
    samples: int = 10000  # Monte-Carlo noise samples on the test set (UAE: 10k)
    lr: float | None = None  # None = train.lr
    max_test_samples: int | None = None
    retrains: int = 1  # independent retrains of the chosen child (training seeds); final.json holds each and the mean

    def validate(self) -> None:
        check(self.epochs >= 0, f"final.epochs must be >= 0, got {self.epochs}")
        check(1 <= self.retrains <= 100,
              f"final.retrains must be an integer in 1..100, got {self.retrains!r}")
        check_samples(self.samples, "final.samples (Monte-Carlo samples)", 2)
        check(self.lr is None or 0 < self.lr <= 10, f"final.lr must be in (0, 10] (or null), got {self.lr}")
        check(self.max_test_samples is None or self.max_test_samples >= 1,
              f"final.max_test_samples must be >= 1 (or null), got {self.max_test_samples}")


@dataclass
class UAESearchConfig:
    """A whole UAE search run (configs/uae/*.yaml)."""

    label: str = "UAE-M"  # method name shown in Table 3 (QuantNAS, NACIM, UAE-M, UAE-95, ...)
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = False  # mirror episodes.jsonl to RUN/tensorboard (the tensorboard extra)
    data: DataConfig = field(default_factory=DataConfig)
    space: UAESpaceConfig = field(default_factory=UAESpaceConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: ChildTrainConfig = field(default_factory=ChildTrainConfig)
    eval: EvalSection = field(default_factory=EvalSection)
    controller: ControllerSection = field(default_factory=ControllerSection)
    search: SearchSection = field(default_factory=SearchSection)
    final: FinalSection = field(default_factory=FinalSection)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)  # crossbar spec of the per-child energy

    def noise_aware(self) -> bool:
        return self.train.noise_aware if self.train.noise_aware is not None else self.eval.k > 0


#: config keys a resumed search may change: they do not alter finished episodes or their replay
SEARCH_RESUMABLE = ("search.episodes", "final.", "progress", "train.progress", "device", "tensorboard")


# ============================================================================ analysis
@dataclass
class AnalysisTrainConfig(OptimConfig):
    """Training of the analysed model when no checkpoint is given (small budgets for a CPU)."""

    epochs: int = 2
    lr: float = 0.05
    weight_decay: float = 0.0
    schedule: Literal["multistep", "cosine", "constant"] = "cosine"
    regularizer: Literal["none", "l2", "two_side"] = "none"


@dataclass
class AnalysisSettings:
    """Monte-Carlo and fit settings of one output-change analysis (UAE Sec. 3.2)."""

    samples: int = 10_000  # S noise samples (paper: 10k)
    bins: int = 100  # N of Eq. 5-6 (paper: 100)
    span: float = 4.0  # bins cover mean +- span * std; tails folded into the end bins
    input_index: int = 0  # which test image is the fixed input I
    seed: int = 0  # noise seed

    def validate(self) -> None:
        check_samples(self.samples, "analysis samples (--samples)", 2)
        check(2 <= self.bins <= 100_000, f"bins must be in 2..100,000, got {self.bins}")
        check(0 < self.span <= 100, f"span must be in (0, 100], got {self.span}")
        check(self.input_index >= 0, f"input_index must be >= 0, got {self.input_index}")


@dataclass
class AnalysisConfig:
    """One `cimnas uae analyze` run (built from the command line; stored as the run folder's config.yaml)."""

    seed: int = 0
    device: str = "cpu"
    model: str = "lenet5"  # a cimnas model, or PATH.py:FACTORY / torchvision:NAME / timm:NAME (cimnas.nn.zoo)
    precision: str = "float"
    rules: dict = field(default_factory=dict)  # outside models: {name pattern: precision} (cimnas.nn.convert)
    checkpoint: str | None = None
    element: int = 0  # output element shown in the figure
    data: DataConfig = field(default_factory=lambda: DataConfig(name="fashion-mnist"))
    train: AnalysisTrainConfig = field(default_factory=AnalysisTrainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)

    def validate(self) -> None:
        check(self.element >= 0, f"--element must be >= 0, got {self.element}")
        check(not self.rules or ":" in self.model, "--rule / --keep-digital apply to outside models only "
              "(--model-file PATH.py:FACTORY, --model torchvision:NAME / timm:NAME)")


@dataclass
class Table1Row:
    """One model row of UAE Table 1."""

    label: str = "LeNet"
    model: str = "lenet5"
    data: str = "small"  # small (Fashion-MNIST / MNIST / digits) | cifar10 (only with a CIFAR-10 path)
    kwargs: dict[str, Any] = field(default_factory=dict)  # build_model keywords
    float_quantizers: bool = False  # strip all quantizers (Float-Conv)


@dataclass
class Table1Config:
    """UAE Table 1 reproduction at configurable scale (configs/uae/table1.yaml)."""

    seed: int = 0  # data subset / split seed
    device: str = "cpu"
    data: DataConfig = field(default_factory=lambda: DataConfig(name="fashion-mnist", limit=10_000,
                                                                test_limit=2_000))
    fallback_dataset: str = "digits"  # used (and noted) when `data.name` cannot be loaded
    cifar10_dir: str | None = None  # CIFAR-10 rows run only when this is given
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # initialisations
    train: AnalysisTrainConfig = field(default_factory=AnalysisTrainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    rows: list[Table1Row] = field(default_factory=list)

    def validate(self) -> None:
        check(len(self.seeds) >= 1, "seeds must list at least one initialisation seed")
        check(len(self.rows) >= 1, "rows must list at least one model")
        labels = [r.label for r in self.rows]
        check(len(set(labels)) == len(labels), f"rows: labels must be distinct, got {labels}")
        for r in self.rows:
            check(r.data in ("small", "cifar10"), f"row {r.label!r}: data must be small or cifar10, got {r.data!r}")


#: Table 1 keys a resume may change (more seeds extend the table; finished runs are kept)
TABLE1_RESUMABLE = ("seeds", "cifar10_dir", "device", "train.progress")
