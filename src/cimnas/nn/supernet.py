"""Non-uniform slimmable super-net (HAWIS III-A, III-B; slimmable networks, once-for-all).

The super-net is the binarized baseline widened uniformly to `r_max` (HAWIS: 5x). Any per-layer
width vector selects a sub-net by slicing the first channels of every weight
(`model.set_widths`, which sets `active_in` / `active_out` on every QConv2d / QLinear and BN);
residual additions with mismatched widths are zero-padded / truncated inside the model
(`match_channels`); the classifier's outputs stay fixed.

The width maths (Eq. 7/8) and the sub-net samplers are not here: the super-net holds a
`cimnas.nn.widths.WidthSpace` (`net.space`) and is built at its `max_widths()`; draw sub-nets with
`net.space.sample_uniform(gen)`, `sample_nonuniform`, `morph`, `sandwich`.

Batch-norm statistics cannot be shared between non-uniform sub-nets, so `recalibrate_bn` resets
them and re-estimates them as a cumulative average (momentum=None) over a few training batches
in train mode before a sub-net is evaluated.

Training follows the sandwich rule (HAWIS Eq. 1): the losses of several sub-nets on the same
batch are summed (gradients accumulate), then one optimizer step is taken. Optionally with in-place
distillation (universally slimmable networks, HAWIS ref. [21]): the first sub-net of the step (the
largest, in the sandwich rule) learns from the labels and every other one from its soft predictions,
detached, at no extra forward cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cimnas.errors import CimnasError
from cimnas.nn.models import build_model, rebuild_model
from cimnas.nn.widths import WidthSpace


class SuperNet(nn.Module):
    """A binarized model built at the maximum widths plus sub-net selection (HAWIS stage A/B).

    Args:
        model: a width-searchable cimnas model (`base_widths`, `widths`, `set_widths`,
            `arch_meta`) built at `space.max_widths()`.
        space: the width space (Eq. 7/8). Or, instead, `r_min`, `r_max` (bounds of the per-layer
            expansion ratio, Eq. 7) and `d` (channel granularity, Eq. 8), from which the space
            `WidthSpace(model.base_widths, r_min, r_max, d)` is made.
    """

    def __init__(self, model: nn.Module, space: WidthSpace | None = None, *, r_min: float = 1.0,
                 r_max: float = 5.0, d: int = 4):
        super().__init__()
        for attr in ("base_widths", "set_widths", "arch_meta"):
            if not hasattr(model, attr):
                raise CimnasError(f"model {type(model).__name__} is not width-searchable (no {attr}); "
                                  "choose a model that accepts a width list")
        self.space = space if space is not None else WidthSpace(tuple(model.base_widths), r_min, r_max, d)
        self.model = model
        self.base_widths: list[int] = [int(w) for w in model.base_widths]
        self.max_widths: list[int] = [int(w) for w in _current_widths(model)]
        if list(self.space.base_widths) != self.base_widths:
            raise CimnasError(f"width space base widths {list(self.space.base_widths)} differ from the model's "
                              f"{self.base_widths}; build the space from model.base_widths")
        if self.max_widths != list(self.space.max_widths().widths):
            raise CimnasError(f"super-net widths {self.max_widths} are not the space's max_widths "
                              f"{list(self.space.max_widths().widths)}; build the model at space.max_widths()")

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, name: str, *, in_channels: int, num_classes: int, image_size: int,
              r_min: float = 1.0, r_max: float = 5.0, d: int = 4, **kw) -> SuperNet:
        """Build the binarized baseline `name` at the space's max widths (Eq. 8 of r_max)."""
        probe = build_model(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                            precision="binary", **kw)
        space = WidthSpace(tuple(probe.base_widths), r_min, r_max, d)
        model = build_model(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                            precision="binary", widths=list(space.max_widths().widths), **kw)
        return cls(model, space)

    # ------------------------------------------------------------------ selection
    @property
    def num_layers(self) -> int:
        """Number of searchable layers (HAWIS: L - 1, the classifier is fixed)."""
        return len(self.base_widths)

    def check_widths(self, widths: Sequence[int]) -> list[int]:
        widths = [int(w) for w in widths]
        if len(widths) != self.num_layers:
            raise CimnasError(f"width vector has {len(widths)} entries; this model needs {self.num_layers}")
        for i, (w, m) in enumerate(zip(widths, self.max_widths, strict=True)):
            if not 1 <= w <= m:
                raise CimnasError(f"width {w} of layer {i} is outside [1, {m}] (the super-net's width)")
        return widths

    def set_widths(self, widths: Sequence[int]) -> None:
        self.model.set_widths(self.check_widths(widths))

    def widths(self) -> list[int]:
        return list(_current_widths(self.model))

    @contextmanager
    def subnet(self, widths: Sequence[int]) -> Iterator[SuperNet]:
        """Context in which the super-net computes as the sub-net `widths`."""
        prev = self.widths()
        self.set_widths(widths)
        try:
            yield self
        finally:
            self.model.set_widths(prev)

    @property
    def arch_meta(self) -> dict:
        """The wrapped model's build description (checkpoints store it; the state dict is the super-net's)."""
        return self.model.arch_meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ------------------------------------------------------------------ widths of the space
    def largest(self) -> list[int]:
        """The super-net itself (space.max_widths())."""
        return list(self.space.max_widths().widths)

    def smallest(self) -> list[int]:
        """The narrowest sub-net (space.min_widths())."""
        return list(self.space.min_widths().widths)

    # ------------------------------------------------------------------ training
    def slimmable_step(self, x: torch.Tensor, y: torch.Tensor, widths_list: Sequence[Sequence[int]],
                       optimizer: torch.optim.Optimizer,
                       regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
                       distill: bool = False,
                       reduce_grads: Callable[[], None] | None = None) -> torch.Tensor | float:
        """One sandwich-rule step (Eq. 1): sum of the sub-nets' losses on one batch, one optimizer step.

        `distill`: in-place distillation; `widths_list[0]` is the teacher (cross-entropy with the labels),
        the others minimise the cross-entropy with its softmax (detached). `reduce_grads`: called once after
        the sub-nets' backwards and before the regularizer's (data-parallel training averages the accumulated
        data gradients over ranks there, so the regularizer's gradient, the same on every rank, is added once).
        Returns the mean loss (a 0-dim tensor on the device: no host synchronisation per step)."""
        self.train()
        optimizer.zero_grad(set_to_none=True)
        prev = self.widths()
        total = 0.0
        soft = None
        try:
            for i, widths in enumerate(widths_list):
                self.set_widths(widths)
                logits = self.model(x)
                loss = F.cross_entropy(logits, y if soft is None else soft)
                if distill and i == 0:
                    soft = F.softmax(logits.detach(), dim=1)
                loss.backward()
                total = total + loss.detach()
        finally:
            self.model.set_widths(prev)
        if reduce_grads is not None:
            reduce_grads()
        if regularizer is not None:
            reg = regularizer(self.model)
            if isinstance(reg, torch.Tensor) and reg.requires_grad:
                reg.backward()
        optimizer.step()
        return total / max(1, len(widths_list))

    def sandwich_widths(self, generator: torch.Generator, n_random: int = 2) -> list[list[int]]:
        """Largest, smallest and `n_random` random non-uniform sub-nets (sandwich rule, space.sandwich)."""
        return [list(a.widths) for a in self.space.sandwich(generator, n_random)]

    # ------------------------------------------------------------------ batch norm
    def bn_layers(self) -> list[_BatchNorm]:
        return [m for m in self.model.modules() if isinstance(m, _BatchNorm)]

    @torch.no_grad()
    def recalibrate_bn(self, widths: Sequence[int], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                       num_batches: int, device: torch.device | str | None = None) -> int:
        """Reset BN running stats and re-estimate them for sub-net `widths` as a cumulative average
        over up to `num_batches` batches in train mode. Leaves the super-net set to `widths` and in
        eval mode. Returns the number of batches used."""
        self.set_widths(widths)
        bns = self.bn_layers()
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        self.train()
        used = 0
        try:
            for x, _ in batches:
                if used >= num_batches:
                    break
                if device is not None:
                    x = x.to(device)
                self.model(x)
                used += 1
        finally:
            for bn, m in zip(bns, momenta, strict=True):
                bn.momentum = m
            self.eval()
        return used

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract_subnet(self, widths: Sequence[int]) -> nn.Module:
        """A standalone model built with `widths`, holding the super-net's sliced weights and
        (current) BN statistics; it computes exactly as the super-net does with `widths` set."""
        widths = self.check_widths(widths)
        if hasattr(self.model, "extract_subnet"):  # a user model sliced per channel group (cimnas.nn.slimmable)
            return self.model.extract_subnet(widths)
        meta = dict(self.model.arch_meta)
        meta["widths"] = list(widths)
        if "width_mult" in meta:
            meta["width_mult"] = 1.0
        sub = rebuild_model(meta)
        src = self.model.state_dict()
        dst = sub.state_dict()
        for key, target in dst.items():
            if key not in src:
                raise CimnasError(f"cannot extract sub-net: super-net has no tensor {key!r}")
            s = src[key]
            if s.dim() != target.dim():
                raise CimnasError(f"cannot extract sub-net: {key!r} has rank {s.dim()} vs {target.dim()}")
            if s.dim() == 0:
                target.copy_(s)
                continue
            index = tuple(slice(0, n) for n in target.shape)
            target.copy_(s[index])
        p = next(self.model.parameters(), None)
        if p is not None:
            sub.to(p.device)
        sub.train(self.training)
        return sub


def _current_widths(model: nn.Module) -> list[int]:
    w = getattr(model, "widths", None)
    if w is None:
        raise CimnasError(f"model {type(model).__name__} does not report its widths")
    return [int(v) for v in (w() if callable(w) else w)]
