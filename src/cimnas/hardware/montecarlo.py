"""Monte-Carlo robustness: accuracy distribution of a model over device-defect samples.

One trial = one draw of every defect on every mapped layer (generator seeded with
derive_seed(seed, "mc-trial", t)), set as `weight_override` once, then the whole split is evaluated,
then the overrides are removed. The model is never deep-copied and noise is never drawn per batch
(UAE Sec. 4.2 uncertainty-aware evaluation; HAWIS Sec. IV-C / Fig. 3 robustness curves).

Fast path: the split's batches are materialised on the device once and reused by every trial, the
crossbar mapping is computed once per model, and trials of defect-free settings are evaluated once.
Each trial is a pure function of (weights, defects, seed, trial index), so trials can be farmed out
to workers unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cimnas.errors import check
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig, DefectModel, sample_weight
from cimnas.hardware.mapping import MappedModel, map_model
from cimnas.utils.seed import derive_seed, make_generator

#: Default sweep levels (HAWIS Fig. 3 axes; the paper's region of interest is SA0 <= 1.75 %,
#: SA1 <= 9.04 %).
DEFAULT_SWEEP: dict[str, list[float]] = {
    "sa0": [0.0, 0.0025, 0.005, 0.01, 0.0175, 0.03],
    "sa1": [0.0, 0.02, 0.05, 0.0904, 0.15, 0.2],
    "variation": [0.0, 0.1, 0.2, 0.3, 0.5, 0.8],
}


@dataclass
class MCResult:
    """Accuracies of T Monte-Carlo trials and their summary (p5 = UAE's "95 % minimum")."""

    accs: list[float]
    mean: float
    std: float
    min: float
    p5: float
    max: float

    @classmethod
    def from_accs(cls, accs: Sequence[float]) -> MCResult:
        a = np.asarray(accs, dtype=np.float64)
        return cls([float(x) for x in a], float(a.mean()), float(a.std()), float(a.min()),
                   float(np.percentile(a, 5)), float(a.max()))

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
    """Top-1 accuracy of `model` in eval mode over pre-loaded batches."""
    was = model.training
    model.eval()
    correct = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum().item())
    model.train(was)
    return correct / batches.n


def _as_defects(defects: DefectConfig | Sequence[DefectModel] | None) -> list[DefectModel]:
    if defects is None:
        return []
    if isinstance(defects, DefectConfig):
        return defects.build()
    return [d for d in defects if not d.is_identity]


def run_trial(mapped: MappedModel, defects: list[DefectModel], batches: CachedBatches, seed: int,
              trial: int) -> float:
    """Accuracy of one defect sample: draw once, override, evaluate, restore."""
    device = mapped.layers[0].g_pos.device
    gen = make_generator(derive_seed(seed, "mc-trial", trial), device=device)
    previous = [ml.layer.weight_override for ml in mapped.layers]
    try:
        with torch.no_grad():
            mapped.apply([sample_weight(ml, defects, gen) for ml in mapped.layers])
        return accuracy(mapped.model, batches)
    finally:
        for ml, w in zip(mapped.layers, previous, strict=True):
            ml.layer.weight_override = w


def evaluate_trials(model: nn.Module, split, spec: CrossbarSpec,
                    defects: DefectConfig | Sequence[DefectModel] | None, trials: int, seed: int,
                    batch_size: int = 512, device: str | torch.device = "cpu", *,
                    mapped: MappedModel | None = None, batches: CachedBatches | None = None,
                    max_samples: int | None = None, progress: bool = False) -> MCResult:
    """Accuracy over `trials` independent defect samples of `model` mapped with `spec` on `split`.

    `mapped` / `batches` may be passed in to reuse the mapping and the loaded data across calls.
    """
    check(trials >= 1, f"--trials must be >= 1, got {trials}")
    device = torch.device(device)
    model.to(device)
    model.eval()
    mapped = mapped if mapped is not None else map_model(model, spec)
    batches = batches if batches is not None else CachedBatches(split, batch_size, device, max_samples)
    ds = _as_defects(defects)
    if not ds:  # ideal devices: every trial is the same, evaluate once
        return MCResult.from_accs([run_trial(mapped, ds, batches, seed, 0)] * trials)
    it = tqdm(range(trials), desc="monte-carlo", disable=not progress, leave=False)
    return MCResult.from_accs([run_trial(mapped, ds, batches, seed, t) for t in it])


def _level_config(kind: str, level: float, gaussian_mode: str = "absolute") -> DefectConfig:
    check(kind in ("sa0", "sa1", "variation", "gaussian"),
          f"unknown sweep kind {kind!r}; choose from sa0, sa1, variation, gaussian")
    if kind == "sa0":
        return DefectConfig(sa0=level)
    if kind == "sa1":
        return DefectConfig(sa1=level)
    if kind == "variation":
        return DefectConfig(sigma_variation=level)
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
