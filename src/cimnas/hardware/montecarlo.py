"""Monte-Carlo robustness: THE evaluator of a model's accuracy over device-defect samples.

One trial = one draw of every defect on every layer (generator seeded with derive_seed(seed, "mc-trial", t)),
set through `cimnas.nn.overrides.weight_overrides` once, then the whole split is evaluated, then the overrides
are removed. The model is never deep-copied and noise is never drawn per batch (UAE Sec. 4.2
uncertainty-aware evaluation: one trial = one deployed chip; HAWIS Sec. IV-C / Fig. 3 robustness curves).
The accuracies are summarised by `cimnas.stats.summarize` (n, mean, std with ddof 1, min, p5 = UAE's
"95%-minimum", median, max). The robustness command, HAWIS stage C, and UAE's K-sample child evaluation and
final evaluation all call `evaluate_trials`.

Two ways a trial draws its weights:
- with a crossbar `spec`: the model is mapped onto crossbars once and every defect acts on the conductances or
  the read-back weight (`defects.sample_weight`);
- with a crossbar `spec` and a model drawn at every read (device read noise) or `periphery.mode: tile`: the trial
  is a `chip.Chip` (conductances programmed once, a new read per batch; the per-tile dataflow runs the layers);
- with `spec=None`: weight-level defects only (the `gaussian` defect, UAE Eq. 1) act on each layer's own
  effective (quantized) weight (`GaussianNoise.layer_std` / `sample_weights`).

Fast path: the split's batches are materialised on the device once and reused by every trial, the mapping is
computed once per model, and trials of defect-free settings are evaluated once. Each trial is a pure function
of (weights, defects, seed, trial index), so trials can be farmed out to workers unchanged.

Batched trials (`trial_batch`): on an accelerator, C trials are drawn one by one exactly as above (same
generators, same draws), their weights stacked into (C, *W.shape) tensors and evaluated in one pass per batch,
`torch.vmap` over the model with the stacked weights set through `weight_overrides` (a conv whose input and
weight are both batched becomes one grouped convolution). C is sized from the free device memory
(`trials_per_pass`); the accuracies equal the one-by-one ones. On the CPU the default is one trial per pass:
there grouped convolutions are slower than C plain ones (docs/benchmarks.md, `mc_vmap_vs_sequential_cpu`).

Work limit: a Monte-Carlo request costs about samples x noisy weights random draws (plus as many forward
passes); `check_mc_work` refuses, before any work, requests above `CIMNAS_MAX_MC_WORK` (environment variable,
default 1e11 = 10,000 samples of a 10-million-weight model) with the estimate and how to raise it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from cimnas.errors import check
from cimnas.hardware.chip import Chip
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig, DefectModel, GaussianNoise, sample_weight
from cimnas.hardware.devices.models import is_per_read
from cimnas.hardware.mapping import MappedModel, map_model
from cimnas.hardware.periphery import PeripheryConfig
from cimnas.limits import check_mc_work, max_mc_work  # noqa: F401  (re-exported: callers import them here)
from cimnas.nn.layers import quant_layers
from cimnas.nn.overrides import weight_overrides
from cimnas.stats import summarize
from cimnas.utils.seed import derive_seed, make_generator


def model_weights(model: nn.Module) -> int:
    """Number of conv / FC weights a Monte-Carlo trial perturbs."""
    return sum(m.weight.numel() for _, m in quant_layers(model))


#: Default sweep levels (HAWIS Fig. 3 axes; the paper's region of interest is SA0 <= 1.75 %,
#: SA1 <= 9.04 %).
DEFAULT_SWEEP: dict[str, list[float]] = {
    "sa0": [0.0, 0.0025, 0.005, 0.01, 0.0175, 0.03],
    "sa1": [0.0, 0.02, 0.05, 0.0904, 0.15, 0.2],
    "variation": [0.0, 0.1, 0.2, 0.3, 0.5, 0.8],
}


@dataclass
class MCResult:
    """Accuracies of T Monte-Carlo trials and their `cimnas.stats.summarize` summary (p5 = UAE's "95%-minimum";
    std with ddof 1)."""

    accs: list[float]
    n: int
    mean: float
    std: float
    min: float
    p5: float
    median: float
    max: float

    @classmethod
    def from_accs(cls, accs: Sequence[float]) -> MCResult:
        return cls([float(x) for x in accs], **summarize(accs))

    def to_dict(self) -> dict:
        return asdict(self)


class CachedBatches:
    """The (x, y) batches of a split, moved to `device` once (reused by every trial)."""

    def __init__(self, split, batch_size: int, device: torch.device | str, max_samples: int | None = None):
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        n = 0
        for x, y in split.batches(batch_size, shuffle=False):
            if max_samples is not None and n + len(y) > max_samples:
                x, y = x[: max_samples - n], y[: max_samples - n]
            if len(y) == 0:
                break
            self.batches.append((x.to(device), y.to(device)))
            n += len(y)
            if max_samples is not None and n >= max_samples:
                break
        check(n > 0, "the evaluation split is empty; choose a split with samples")
        self.n = n

    def __iter__(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)


@torch.inference_mode()
def accuracy(model: nn.Module, batches: CachedBatches) -> float:
    """Top-1 accuracy of `model` in eval mode over pre-loaded batches (counted on the device, read once)."""
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=batches.batches[0][1].device)
    for x, y in batches:
        correct += (model(x).argmax(1) == y).sum()
    model.train(was)
    return int(correct) / batches.n


@torch.inference_mode()
def batched_accuracies(model: nn.Module, weights: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]],
                       batches: CachedBatches) -> list[float]:
    """Top-1 accuracies of C weight samples at once: `weights[name]` is (C, *W.shape) for each quantized layer
    it names; one vmapped pass per batch (module doc). Equal to C `accuracy` calls under `weight_overrides`.
    `weights` may be a function returning such a dict, called once per batch (C chips read anew per batch)."""
    first = weights() if callable(weights) else weights
    names = list(first)
    c = first[names[0]].shape[0]

    def predict_one(ws: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
        with weight_overrides(model, dict(zip(names, ws, strict=True))):
            return model(x).argmax(-1)

    predict = torch.vmap(predict_one, in_dims=(0, None))
    was = model.training
    model.eval()
    correct = torch.zeros(c, dtype=torch.long, device=first[names[0]].device)
    try:
        for i, (x, y) in enumerate(batches):
            ws = first if i == 0 or not callable(weights) else weights()
            correct += (predict(tuple(ws[n] for n in names), x) == y).sum(1)
    finally:
        model.train(was)
    return [int(v) / batches.n for v in correct.tolist()]


#: Upper bound on trials per batched pass (beyond it a pass gains nothing and a chunk's draws pile up).
MAX_TRIALS_PER_PASS = 256
#: Share of the free accelerator memory a batched pass may fill.
MEMORY_SHARE = 0.5


@torch.inference_mode()
def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of every leaf module's output in one forward pass on `x`: an upper bound on the activation
    memory one trial needs in a batched pass (inference frees most of them as it goes)."""
    total = [0]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return total[0] + x.numel() * x.element_size()


def free_memory_bytes(device: torch.device) -> int:
    """Free memory of an accelerator (CUDA: mem_get_info; others: a fixed 1 GiB)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return 2**30


def trials_per_pass(model: nn.Module, batches: CachedBatches, trials: int, device: torch.device | str) -> int:
    """How many trials one batched pass evaluates: 1 on the CPU (module doc); on an accelerator as many as
    MEMORY_SHARE of its free memory holds (a trial's weights + a batch's activations), at most
    MAX_TRIALS_PER_PASS and `trials`."""
    device = torch.device(device)
    if device.type == "cpu" or trials <= 1:
        return 1
    weight_bytes = sum(m.weight.numel() * m.weight.element_size() for _, m in quant_layers(model))
    per_trial = 2 * weight_bytes + activation_bytes(model, batches.batches[0][0])
    fits = int(MEMORY_SHARE * free_memory_bytes(device)) // max(1, per_trial)
    return max(1, min(trials, MAX_TRIALS_PER_PASS, fits))


def _as_defects(defects: DefectConfig | Sequence[DefectModel] | None) -> list[DefectModel]:
    if defects is None:
        return []
    if isinstance(defects, DefectConfig):
        return defects.build()
    return [d for d in defects if not d.is_identity]


Draw = Callable[[torch.Generator], dict[str, torch.Tensor]]


def mapped_draw(mapped: MappedModel, defects: list[DefectModel], periphery: PeripheryConfig | None = None) -> Draw:
    """One trial's weights {layer name: weight} from the crossbar-mapped model under `defects`; a `chip.Chip`
    instead when a model is drawn at every read or the periphery runs the per-tile dataflow."""
    if any(is_per_read(d) for d in defects) or (periphery is not None and periphery.mode == "tile"):
        def chip(gen: torch.Generator) -> Chip:  # type: ignore[return-value]
            return Chip(mapped, defects, gen, periphery)

        chip.per_read = True  # type: ignore[attr-defined]
        return chip  # type: ignore[return-value]

    def draw(gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {ml.name: sample_weight(ml, defects, gen) for ml in mapped.layers}

    return draw


def weight_draw(model: nn.Module, defects: list[DefectModel]) -> Draw:
    """One trial's weights from each layer's own effective weight (no crossbar): weight-level defects only."""
    others = [type(d).__name__ for d in defects if not isinstance(d, GaussianNoise)]
    check(not others, f"defect {others[0] if others else ''} acts on crossbar conductances; give a crossbar spec "
          "(a preset) to evaluate it")
    layers = quant_layers(model)
    check(len(layers) > 0, "the model has no QConv2d / QLinear layers to perturb")
    with torch.no_grad():
        base = [m.effective_weight().detach().clone() for _, m in layers]
    stds = [d.layer_stds([m for _, m in layers], base) for d in defects]
    names = [n for n, _ in layers]

    def draw(gen: torch.Generator) -> dict[str, torch.Tensor]:
        weights = base
        for d, s in zip(defects, stds, strict=True):
            weights = d.sample_weights(weights, s, None, gen)
        return dict(zip(names, weights, strict=True))

    return draw


def trial_generator(seed: int, trial: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of trial `trial`: derive_seed(seed, "mc-trial", trial), on the device the draws are used on."""
    return make_generator(derive_seed(seed, "mc-trial", trial), device=torch.device(device))


def run_trial(model: nn.Module, draw: Draw, batches: CachedBatches, seed: int, trial: int,
              device: torch.device | str = "cpu") -> float:
    """Accuracy of one defect sample: draw once (generator of (seed, trial)), override, evaluate, restore."""
    with torch.no_grad():
        weights = draw(trial_generator(seed, trial, device))
        if isinstance(weights, Chip):  # effects drawn at every read, or the per-tile dataflow
            return weights.accuracy(model, batches)
    with weight_overrides(model, weights):
        return accuracy(model, batches)


def run_trials(model: nn.Module, draw: Draw, batches: CachedBatches, seed: int, trials: Sequence[int],
               device: torch.device | str = "cpu") -> list[float]:
    """Accuracies of several trials in one batched pass: each drawn exactly as `run_trial` draws it, the
    weights stacked per layer, evaluated by `batched_accuracies` (same results as one `run_trial` each)."""
    if len(trials) == 1:
        return [run_trial(model, draw, batches, seed, trials[0], device)]
    if getattr(draw, "per_read", False):  # chips read anew per batch: each chip's k-th read serves batch k
        with torch.no_grad():
            chips = [draw(trial_generator(seed, t, device)) for t in trials]
        if chips[0].periphery is not None:  # the per-tile dataflow runs one chip at a time
            return [c.accuracy(model, batches) for c in chips]

        def reads() -> dict[str, torch.Tensor]:
            ws = [c.weights() for c in chips]
            return {n: torch.stack([w[n] for w in ws]) for n in ws[0]}

        return batched_accuracies(model, reads, batches)
    with torch.no_grad():
        draws = [draw(trial_generator(seed, t, device)) for t in trials]
        stacked = {name: torch.stack([d[name] for d in draws]) for name in draws[0]}
    del draws
    return batched_accuracies(model, stacked, batches)


def evaluate_trials(model: nn.Module, split, spec: CrossbarSpec | None,
                    defects: DefectConfig | Sequence[DefectModel] | None, trials: int, seed: int,
                    batch_size: int = 512, device: str | torch.device = "cpu", *,
                    mapped: MappedModel | None = None, batches: CachedBatches | None = None,
                    max_samples: int | None = None, progress: bool = False,
                    trial_batch: int | None = None, periphery: PeripheryConfig | None = None) -> MCResult:
    """Accuracy over `trials` independent defect samples of `model` on `split` (module doc).

    `spec`: the crossbar the model is mapped onto, or None for weight-level defects on the layers' own weights.
    `mapped` / `batches` may be passed in to reuse the mapping and the loaded data across calls. The model
    is left in the train/eval mode it was in, with its own weights. `trial_batch`: trials per batched pass
    (None = `trials_per_pass`: from the free memory on an accelerator, 1 on the CPU); the accuracies do not
    depend on it. `periphery`: how the crossbars are read (None or mode ideal = exactly; mode tile = the per-tile
    dataflow with DAC / ADC, `cimnas.hardware.dataflow`; needs a spec).
    """
    check(periphery is None or periphery.mode == "ideal" or spec is not None or mapped is not None,
          "the per-tile dataflow (periphery.mode=tile) needs a crossbar spec (a preset)")
    check(isinstance(trials, int) and trials >= 1, f"--trials must be >= 1, got {trials}")
    check(max_samples is None or max_samples >= 1, f"max_samples must be >= 1 (or unset), got {max_samples}")
    check(trial_batch is None or (isinstance(trial_batch, int) and trial_batch >= 1),
          f"trial_batch must be a positive integer (or unset), got {trial_batch!r}")
    device = torch.device(device)
    ds = _as_defects(defects)
    check_mc_work(trials if ds else 1, model_weights(model), "Monte-Carlo trials")
    was_training = model.training
    model.to(device)
    model.eval()
    try:
        batches = batches if batches is not None else CachedBatches(split, batch_size, device, max_samples)
        if spec is not None or mapped is not None:
            draw = mapped_draw(mapped if mapped is not None else map_model(model, spec), ds, periphery)
        else:
            draw = weight_draw(model, ds)
        if not ds and (periphery is None or periphery.mode == "ideal" or periphery.out_noise == 0):
            # ideal devices (and a noiseless periphery): every trial is the same, evaluate once
            return MCResult.from_accs([run_trial(model, draw, batches, seed, 0, device)] * trials)
        chunk = trial_batch if trial_batch is not None else trials_per_pass(model, batches, trials, device)
        accs: list[float] = []
        with tqdm(total=trials, desc="monte-carlo", disable=not progress, leave=False) as bar:
            for start in range(0, trials, chunk):
                ts = list(range(start, min(trials, start + chunk)))
                accs += run_trials(model, draw, batches, seed, ts, device)
                bar.update(len(ts))
        return MCResult.from_accs(accs)
    finally:
        model.train(was_training)


def _level_config(kind: str, level: float, gaussian_mode: str = "absolute") -> DefectConfig:
    check(kind in ("sa0", "sa1", "variation", "gaussian"),
          f"unknown sweep kind {kind!r}; choose from sa0, sa1, variation, gaussian")
    if kind == "sa0":
        return DefectConfig(sa0_rate=level)
    if kind == "sa1":
        return DefectConfig(sa1_rate=level)
    if kind == "variation":
        return DefectConfig(variation_sigma=level)
    return DefectConfig(gaussian_sigma=level, gaussian_mode=gaussian_mode)  # type: ignore[arg-type]


def robustness_sweep(models: dict[str, nn.Module], split, spec: CrossbarSpec,
                     sweep: dict[str, list[float]] | None = None, trials: int = 10, seed: int = 0,
                     batch_size: int = 512, device: str | torch.device = "cpu",
                     max_samples: int | None = None, gaussian_mode: str = "absolute",
                     progress: bool = False) -> dict:
    """Accuracy (mean, std, min, p5, max, per-trial) vs defect level for several models.

    Returns {"trials", "seed", "spec", "kinds": {kind: {"levels": [...], "models": {label: [result
    per level]}}}}, the input of `cimnas.reports.robustness_plot.plot_robustness`.
    """
    sweep = sweep or DEFAULT_SWEEP
    for kind, levels in sweep.items():
        for lv in levels:
            _level_config(kind, lv, gaussian_mode).validate()
    device = torch.device(device)
    batches = CachedBatches(split, batch_size, device, max_samples)
    out: dict = {"trials": trials, "seed": seed, "spec": spec.to_dict(), "samples": batches.n, "kinds": {}}
    for kind in sweep:
        out["kinds"][kind] = {"levels": list(sweep[kind]), "models": {}}
    total = sum(len(v) for v in sweep.values()) * len(models)
    bar = tqdm(total=total, desc="robustness sweep", disable=not progress)
    for label, model in models.items():
        model.to(device)
        model.eval()
        mapped = map_model(model, spec)
        for kind, levels in sweep.items():
            rows = []
            for lv in levels:
                res = evaluate_trials(model, None, spec, _level_config(kind, lv, gaussian_mode), trials,
                                      derive_seed(seed, kind, lv), device=device, mapped=mapped, batches=batches)
                rows.append({"level": lv, **res.to_dict()})
                bar.update(1)
            out["kinds"][kind]["models"][label] = rows
    bar.close()
    return out
