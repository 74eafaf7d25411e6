"""One Monte-Carlo trial's chip when some effect is drawn at every read, or the periphery is simulated.

`montecarlo.mapped_draw` draws every once-per-chip model (programming noise, drift, relaxation, levels, IR drop,
stuck-at, variation, ...) once per trial on the mapped conductances, exactly as before. When a model is drawn at
every read (`is_per_read`: read noise) or the periphery runs the per-tile dataflow (`PeripheryConfig.mode ==
"tile"`), the trial is a `Chip`: it holds the programmed conductances and draws a new read for every forward pass
of a batch from the trial's generator (continuing the chip's stream, so trial t is still a pure function of
(seed, t)). Weight-level models (UAE's gaussian in absolute / relative mode) are drawn once per chip as an additive
delta on the read-back weight, so they stay a chip property.
"""

from __future__ import annotations

import torch
from torch import nn

from cimnas.errors import check
from cimnas.hardware.dataflow import dataflow_forwards
from cimnas.hardware.defects import DefectModel
from cimnas.hardware.devices.models import is_per_read
from cimnas.hardware.mapping import MappedModel
from cimnas.hardware.periphery import PeripheryConfig
from cimnas.nn.overrides import weight_overrides


def split_models(defects: list[DefectModel]) -> tuple[list[DefectModel], list[DefectModel]]:
    """(drawn once per chip, drawn at every read), each in the given order."""
    return [d for d in defects if not is_per_read(d)], [d for d in defects if is_per_read(d)]


def _has_weight_hook(d: DefectModel) -> bool:
    return type(d).perturb_weight is not DefectModel.perturb_weight


class Chip:
    """A programmed chip of one trial (module doc). `accuracy(model, batches)` evaluates it, one read per batch."""

    def __init__(self, mapped: MappedModel, defects: list[DefectModel], gen: torch.Generator,
                 periphery: PeripheryConfig | None):
        self.mapped, self.gen = mapped, gen
        self.periphery = periphery if periphery is not None and periphery.mode == "tile" else None
        chip, self.reads = split_models(defects)
        if self.periphery is not None:
            weight_level = [type(d).__name__ for d in chip if _has_weight_hook(d)]
            check(not weight_level, f"{weight_level[0] if weight_level else ''} acts on read-back weights, but the "
                  "per-tile dataflow reads conductances; use gaussian mode bitsliced or periphery.mode=ideal")
        self.g: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.delta: dict[str, torch.Tensor] = {}
        for ml in mapped.layers:
            gp, gn = ml.g_pos, ml.g_neg
            for d in chip:
                gp, gn = d.perturb_conductances(ml, gp, gn, gen)
            self.g[ml.name] = (gp, gn)
            if any(_has_weight_hook(d) for d in chip):
                w0 = ml.read_weight(gp.clone(), gn.clone())
                w = w0.clone()
                for d in chip:
                    w = d.perturb_weight(ml, w, gen)
                self.delta[ml.name] = w - w0

    def conductances(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One read: the chip's conductances with this read's per-read effects."""
        return {ml.name: self.conductances_of(ml) for ml in self.mapped.layers}

    def weights(self) -> dict[str, torch.Tensor]:
        """One read's effective weights {layer name: weight}."""
        out = {}
        for ml in self.mapped.layers:
            w = ml.read_weight(*self.conductances_of(ml))
            out[ml.name] = w + self.delta[ml.name] if ml.name in self.delta else w
        return out

    def conductances_of(self, ml) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `ml`'s conductances in a new read (the chip's, with the per-read effects drawn now)."""
        gp, gn = self.g[ml.name]
        for d in self.reads:
            gp, gn = d.perturb_conductances(ml, gp, gn, self.gen)
        return gp, gn

    @torch.inference_mode()
    def accuracy(self, model: nn.Module, batches) -> float:
        """Top-1 accuracy over `batches`, a new read per batch."""
        was = model.training
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=batches.batches[0][1].device)
        try:
            if self.periphery is not None:
                with dataflow_forwards(self.mapped, self.conductances, self.periphery, self.gen):
                    for x, y in batches:
                        correct += (model(x).argmax(1) == y).sum()
            else:
                for x, y in batches:
                    with weight_overrides(model, self.weights()):
                        correct += (model(x).argmax(1) == y).sum()
        finally:
            model.train(was)
        return int(correct) / batches.n
