"""Any converted CNN as a width-searchable model over its coupled channel groups (cimnas.nn.groups).

`GroupSlimmable(model, input_shape)` wraps a model whose convs / Linears are QConv2d / QLinear (a zoo
model, or any PyTorch model after `cimnas.convert`) and gives it the `WidthSearchable` contract the
slimmable super-net (cimnas.nn.supernet.SuperNet), the HAWIS stages and the hardware model already use:
`base_widths` / `built_widths` / `widths` (one entry per searchable channel group, in forward order),
`set_widths`, `searchable_layer_names` (each group's first producer, for the Eq. 6 states) and `arch_meta`.
So there is one super-net: the sandwich rule, BN recalibration per sub-net and the Eq. 7/8 width space
(cimnas.nn.widths) are SuperNet's and WidthSpace's, unchanged.

`set_widths` slices like the zoo models do: the first k channels of every weight (`active_out`,
`active_in` via `set_active`), the first channels of each BN (its classes are switched in place to
`SlimmableBatchNorm2d` / `1d`, which slice to their input), a depthwise conv to its first k channels (and its
`groups` to k: it is then a depthwise conv of k channels to PyTorch and to the hardware model alike), and the
input of a concatenation's consumer (and a BN after a concatenation) to the concatenated groups' first channels
(`in_index`, the BN's `channel_index`).

A group that touches a conv / Linear the conversion left as a plain `nn.Conv2d` / `nn.Linear` (digital)
keeps its width (`fixed`), as does the group of the logits. The built channels are the super-net: the
search picks widths up to them, so a width space for a user model has `r_max <= 1` (`group_space`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cimnas.errors import CimnasError, check
from cimnas.nn.convert import Conversion, conversion_of
from cimnas.nn.groups import ChannelGroups, derive_groups
from cimnas.nn.layers import QConv2d, QLinear, SlimmableBatchNorm1d, SlimmableBatchNorm2d
from cimnas.nn.models._common import WidthSearchable, set_active
from cimnas.nn.widths import WidthSpace

_SLIMMABLE_BN = {nn.BatchNorm2d: SlimmableBatchNorm2d, nn.BatchNorm1d: SlimmableBatchNorm1d}


def _fix_digital(groups: ChannelGroups, model: nn.Module) -> ChannelGroups:
    """Groups touching a conv / Linear that is not a QConv2d / QLinear keep their width."""
    out = []
    for g in groups.groups:
        plain = [u.layer for u in g.uses if isinstance(model.get_submodule(u.layer), nn.Conv2d | nn.Linear)
                 and not isinstance(model.get_submodule(u.layer), QConv2d | QLinear)]
        out.append(g if g.fixed or not plain else replace(g, fixed=f"touches the digital layer {plain[0]!r}"))
    return ChannelGroups(out, dict(groups.sizes))


class GroupSlimmable(WidthSearchable):
    """`model` (QConv2d / QLinear layers) sliced per channel group; see the module docstring.

    Args:
        model: the network; its BNs touched by a searchable group become slimmable in place.
        input_shape: (C, H, W) of one input (the groups are traced with it).
        groups: the channel groups if already derived (`derive_groups`), else derived here.
        arch_meta: the build description checkpoints store (default: the model's own, if any).
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], groups: ChannelGroups | None = None,
                 arch_meta: dict | None = None):
        super().__init__()
        self.model = model
        self.input_shape = tuple(int(s) for s in input_shape)
        self.groups = _fix_digital(groups if groups is not None else derive_groups(model, self.input_shape), model)
        check(self.groups.searchable, "every channel group of the model is fixed (digital layers or the logits): "
              "nothing to search; convert more layers to the crossbar")
        for g in self.groups.groups:
            if g.fixed is None:
                for u in g.uses:
                    self._adopt_bn(u.layer)
        self._depthwise = {n for n, m in model.named_modules() if isinstance(m, QConv2d) and m.groups > 1}
        built = self.groups.base_widths
        self._init_widths(type(model).__name__, built, built)
        meta = arch_meta if arch_meta is not None else getattr(model, "arch_meta", None)
        self._meta = dict(meta or {})

    @property
    def arch_meta(self) -> dict:
        """The model's build description plus `group_widths` (what `rebuild_model` slices a rebuilt model to)."""
        return dict(self._meta, group_widths=self.widths)

    def _adopt_bn(self, name: str) -> None:
        m = self.model.get_submodule(name)
        if isinstance(m, SlimmableBatchNorm2d | SlimmableBatchNorm1d) or not isinstance(m, _BatchNorm):
            return
        cls = _SLIMMABLE_BN.get(type(m))
        if cls is None:
            raise CimnasError(f"layer {name!r} is a {type(m).__name__}: width search slices nn.BatchNorm1d / 2d only")
        m.__class__ = cls

    @property
    def cimnas_conversion(self) -> Conversion | None:
        """The wrapped model's conversion recipe with its layer names as seen from here (`model.` prefix): the
        hardware model reads it to tell digital layers from unconverted ones."""
        conv = conversion_of(self.model)
        if conv is None:
            return None
        return Conversion(conv.default, dict(conv.rules), {f"model.{n}": p for n, p in conv.layers.items()},
                          [f"model.{n}" for n in conv.digital])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _apply_widths(self, widths: list[int]) -> None:
        for name, s in self.groups.slices(widths).items():
            layer = self.model.get_submodule(name)
            if isinstance(layer, SlimmableBatchNorm2d | SlimmableBatchNorm1d):  # sliced to its input: which channels
                layer.channel_index = None if s.out_index is None else torch.tensor(s.out_index, device="cpu")
                continue
            if not isinstance(layer, QConv2d | QLinear):
                continue  # digital layers belong to fixed groups only
            set_active(layer, s.inp, s.out)
            layer.in_index = None if s.in_index is None else torch.tensor(s.in_index, dtype=torch.long, device="cpu")
            if name in self._depthwise:  # k channels of a depthwise conv: a depthwise conv of k groups
                layer.groups = layer.out_channels if s.out is None else s.out

    def searchable_layer_names(self) -> list[str]:
        """The first producer of each searchable group (its Eq. 6 state row), as names in this module."""
        return [f"model.{self.groups.groups[i].name}" for i in self.groups.searchable]

    @torch.no_grad()
    def extract_subnet(self, widths: Sequence[int]) -> GroupSlimmable:
        """A standalone copy computing as the sub-net `widths` (SuperNet.extract_subnet's hook)."""
        sub = copy.deepcopy(self)
        sub.set_widths(list(widths))
        return sub


def rebuild_sliced(model: nn.Module, arch_meta: dict) -> nn.Module:
    """A rebuilt model (`rebuild_model`) of a checkpoint whose `arch` has `group_widths`: wrapped and sliced
    as it was saved (so its state_dict keys and its computation match)."""
    widths = arch_meta.get("group_widths")
    check(isinstance(widths, list) and all(isinstance(w, int) for w in widths), "arch metadata 'group_widths' "
          "must be a list of integers; the checkpoint is corrupt")
    net = GroupSlimmable(model, model.input_shape, arch_meta={k: v for k, v in arch_meta.items()
                                                              if k != "group_widths"})
    net.set_widths(widths)
    return net


def group_space(model: GroupSlimmable, r_min: float, r_max: float = 1.0, d: int = 4) -> WidthSpace:
    """The Eq. 7/8 width space over a user model's searchable groups: ratios of the built channels in
    [r_min, r_max] (r_max <= 1: the built model is the super-net), every width a multiple of d. Leaves
    `model` set to the space's largest widths."""
    check(r_max <= 1.0, f"space.r_max is {r_max:g}: on your own model the built channels are the super-net, so "
          "widths can only shrink; use r_max <= 1 (e.g. r_min: 0.25, r_max: 1.0) and widen the model in its "
          "factory for more")
    for g, c in zip((model.groups.groups[i] for i in model.groups.searchable), model.base_widths, strict=True):
        check(c >= d, f"channel group {g.name!r} has {c} channels, fewer than space.d={d}; use a smaller space.d")
    space = WidthSpace(tuple(model.base_widths), r_min, r_max, d)
    for g, c, m in zip((model.groups.groups[i] for i in model.groups.searchable), model.base_widths,
                       space.max_widths().widths, strict=True):
        check(m <= c, f"channel group {g.name!r} has {c} channels, not a multiple of space.d={d}, so the largest "
              f"width {m} exceeds it; use a space.d that divides every group's channels")
    model.set_widths(list(space.max_widths().widths))
    return space
