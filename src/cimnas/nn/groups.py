"""Coupled channel groups of any CNN: which output channels must keep equal widths.

A width search on a network cimnas did not define cannot give every conv its own width: a residual add
`a + b` needs a and b to have the same channels, a depthwise conv has as many outputs as inputs, a BN
follows its conv, a Linear after `flatten` reads C*H*W features of the last conv, and the consumer of a
`torch.cat` reads the channels of several producers side by side. The channels that must change together
form one *group*; a group's width is one decision of the search (HAWIS's per-layer width becomes a
per-group width).

The groups come from torch-pruning's dependency graph (DepGraph, Fang et al., CVPR 2023; the optional
`groups` extra), which traces one forward pass through autograd and propagates "drop these output channels"
through adds, concatenations (with their index offsets), flattens and normalisations. Here the graph is
read once and turned into plain data by module *name* (`ChannelGroups`), so the same plan applies to any
instance of the same structure (a fresh build, a converted copy, a checkpoint) and nothing of
torch-pruning is kept.

Slicing follows the slimmable super-net (cimnas.nn.supernet): a group of width k keeps the *first* k of
its channels. Every place a group's channels appear (a conv's or Linear's output or input, a BN, a
depthwise conv, the features after flatten) is a `ChannelUse`: the positions along that dimension and the
group channel each position carries; `ChannelGroups.slices(widths)` turns a width per group into what each
layer keeps. Outputs, BNs and depthwise convs keep a prefix (their `active_out` / the BN's input width);
the input of a concatenation's consumer keeps the first k_a channels of one part and the first k_b of the
next, which is not a prefix, so it gets an index (`in_index` of QConv2d / QLinear).

A group whose channels reach the model's output (the classifier's logits) keeps its width (`fixed`).
Where the groups cannot be used for slicing (a split / chunk / slice of channels, a channel-changing op
torch-pruning does not know, a grouped conv that is not depthwise, a norm other than BN, a layer run
twice, a depthwise conv reading a concatenation), `derive_groups` raises a one-line CimnasError naming the
layer. A BN after a concatenation keeps the concatenated groups' first channels (`out_index`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cimnas.errors import CimnasError, check
from cimnas.nn.layers import QConv2d, QLinear

EXTRA = "groups"
INSTALL = f"pip install 'cimnas[{EXTRA}]' (torch-pruning, pure Python)"
#: torch-pruning op kinds whose channels pass through unchanged (no slicing needed).
_PASS_OPS = ("ELEMENTWISE", "CONCAT", "RESHAPE", "OUTPUT")
#: op kinds that move channels in ways a prefix slice cannot follow.
_REFUSED_OPS = {"SPLIT": "a split / chunk", "SLICE": "a slice", "UNBIND": "an unbind", "EXPAND": "an expand"}
#: (a SLICE along a spatial dimension passes: only one along the channels, dim 1, is refused)
#: autograd ops that reorder dimensions: torch-pruning counts them element-wise, which a channel shuffle is not
_MOVES = ("Transpose", "Permute")


@dataclass(frozen=True)
class ChannelUse:
    """Where a group's channels appear: positions `index` along dimension `dim` ("out" or "in") of module
    `layer`, position index[i] carrying group channel channel[i] (after a flatten one channel fills H*W
    positions; after a concatenation the positions are offset)."""

    layer: str
    dim: str
    index: tuple[int, ...]
    channel: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must keep one width: `producers` (convs / Linears whose outputs they are) and every
    `uses` of them. `fixed`: why the width cannot change (None = searchable)."""

    name: str
    channels: int
    producers: tuple[str, ...]
    uses: tuple[ChannelUse, ...]
    fixed: str | None = None


@dataclass(frozen=True)
class LayerSlice:
    """What one layer keeps: the first `out` outputs and the first `inp` inputs (None = all), or, where the kept
    positions are not a prefix, `inp` positions `in_index` (a concatenation's consumer) / `out` channels
    `out_index` (a BN after a concatenation)."""

    out: int | None = None
    inp: int | None = None
    in_index: tuple[int, ...] | None = None
    out_index: tuple[int, ...] | None = None


@dataclass
class ChannelGroups:
    """The coupled channel groups of one model structure (plain data, by module name).

    `sizes`: (out, in) full size of every conv / Linear and (C, C) of every BN a group touches."""

    groups: list[ChannelGroup]
    sizes: dict[str, tuple[int, int]]
    _uses: dict[tuple[str, str], list[tuple[int, torch.Tensor, torch.Tensor]]] = field(default_factory=dict,
                                                                                       repr=False)

    def __post_init__(self) -> None:
        for g, group in enumerate(self.groups):
            for u in group.uses:
                self._uses.setdefault((u.layer, u.dim), []).append(
                    (g, torch.tensor(u.index, dtype=torch.long, device="cpu"),
                     torch.tensor(u.channel, dtype=torch.long, device="cpu")))

    @property
    def searchable(self) -> list[int]:
        """Indices (into `groups`) of the groups whose width the search chooses, in forward order."""
        return [i for i, g in enumerate(self.groups) if g.fixed is None]

    @property
    def base_widths(self) -> list[int]:
        """Built channels of the searchable groups."""
        return [self.groups[i].channels for i in self.searchable]

    def full_widths(self, widths: Sequence[int]) -> list[int]:
        """A width per group (fixed groups at their size) from one per searchable group, checked."""
        ids = self.searchable
        check(len(widths) == len(ids), f"width vector has {len(widths)} entries; this model has {len(ids)} "
              "searchable channel groups")
        out = [g.channels for g in self.groups]
        for i, w in zip(ids, widths, strict=True):
            g = self.groups[i]
            check(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= g.channels,
                  f"width {w!r} of group {g.name!r} is outside [1, {g.channels}] (its built channels)")
            out[i] = w
        return out

    def kept(self, layer: str, dim: str, widths: Sequence[int]) -> torch.Tensor | None:
        """Boolean mask of the positions of `layer`'s `dim` kept at per-group `widths` (None: untouched)."""
        parts = self._uses.get((layer, dim))
        if parts is None:
            return None
        size = self.sizes[layer][0 if dim == "out" else 1]
        mask = torch.ones(size, dtype=torch.bool, device="cpu")  # plain data, also under a meta device context
        for g, index, channel in parts:
            mask[index[channel >= widths[g]]] = False
        return mask

    def slices(self, widths: Sequence[int]) -> dict[str, LayerSlice]:
        """What every layer touched by a group keeps at `widths` (one width per searchable group)."""
        full = self.full_widths(widths)
        out: dict[str, LayerSlice] = {}
        for name, (n_out, n_in) in self.sizes.items():
            if (name, "out") not in self._uses and (name, "in") not in self._uses:
                continue
            o, o_index = _keep(self.kept(name, "out", full), n_out)
            i, i_index = _keep(self.kept(name, "in", full), n_in)
            out[name] = LayerSlice(out=o, inp=i, in_index=i_index, out_index=o_index)
        return out

    def describe(self) -> list[dict]:
        """One row per group: name, channels, producers, the layers it touches, fixed reason."""
        return [{"group": g.name, "channels": g.channels, "producers": list(g.producers),
                 "layers": sorted({u.layer for u in g.uses}), "searchable": g.fixed is None,
                 **({"fixed": g.fixed} if g.fixed else {})} for g in self.groups]


def _keep(mask: torch.Tensor | None, size: int) -> tuple[int | None, tuple[int, ...] | None]:
    """(count kept, None) for a prefix (count None = all), else (count, the kept positions)."""
    if mask is None:
        return None, None
    n = int(mask.sum())
    if bool(mask[:n].all()):
        return (None if n == size else n), None
    return n, tuple(mask.nonzero().flatten().tolist())


def _tp():
    try:
        import torch_pruning
    except ImportError as e:
        raise CimnasError(f"deriving channel groups needs torch-pruning, which is not installed: {INSTALL}") from e
    return torch_pruning


def _layer_sizes(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Conv2d):
        return int(m.out_channels), int(m.in_channels)
    if isinstance(m, nn.Linear):
        return int(m.out_features), int(m.in_features)
    return int(m.num_features), int(m.num_features)


def _check_layers(model: nn.Module) -> None:
    """Refuse layer kinds the slicing cannot follow, naming the first one."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1 and not (m.groups == m.in_channels == m.out_channels):
            raise CimnasError(f"layer {name!r} is a grouped convolution (groups={m.groups}, {m.in_channels} -> "
                              f"{m.out_channels} channels): width search slices plain and depthwise convolutions only")
        if isinstance(m, nn.GroupNorm | nn.LayerNorm | nn.modules.instancenorm._InstanceNorm | nn.PReLU) and any(
                p.numel() > 1 for p in m.parameters(recurse=False)):
            raise CimnasError(f"layer {name!r} ({type(m).__name__}) has per-channel parameters: width search "
                              "slices BatchNorm only; channel groups cannot be derived")
        if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, nn.Conv2d):
            raise CimnasError(f"layer {name!r} ({type(m).__name__}): width search slices 2-D convolutions only")


def _run_counts(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, int]:
    """How often each conv / Linear runs in one forward pass (and the forward order, by dict order)."""
    counts: dict[nn.Module, int] = {}

    def hook(mod, _inp, _out):
        counts[mod] = counts.get(mod, 0) + 1

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            model(example)
    except Exception as e:  # the user's forward: any failure is reported as one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CimnasError(f"the model's forward failed on an input of shape {tuple(example.shape[1:])} ({first}); "
                          "channel groups need one forward pass") from e
    finally:
        for h in hooks:
            h.remove()
    return counts


def derive_groups(model: nn.Module, input_shape: Sequence[int]) -> ChannelGroups:
    """The coupled channel groups of `model` (see the module docstring), traced with one zero input of shape
    (1, *input_shape). The model is left as it was (weights, widths, train/eval mode)."""
    tp = _tp()
    names = {m: n for n, m in model.named_modules()}
    saved = [(m, m.active_in, m.active_out, m.in_index, m.weight_override, getattr(m, "groups", 1))
             for m in model.modules() if isinstance(m, QConv2d | QLinear)]
    for m, *_ in saved:  # trace the full, unmodified structure
        if isinstance(m, QConv2d) and m.active_out is not None and m.groups == m.active_out:
            m.groups = m.out_channels  # a sliced depthwise conv (cimnas.nn.slimmable)
        m.active_in = m.active_out = m.in_index = m.weight_override = None
    modes = {m: m.training for m in model.modules()}
    p = next(model.parameters(), None)
    example = torch.zeros((1, *[int(s) for s in input_shape]), device=p.device if p is not None else "cpu")
    try:
        _check_layers(model)
        model.eval()
        counts = _run_counts(model, example)
        twice = [names[m] for m, c in counts.items() if c > 1]
        check(not twice, f"layer {twice[0]!r} runs more than once per forward pass: width search needs each "
              "conv / Linear once (channel groups cannot be derived)" if twice else "")
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
        return _read_graph(tp, graph, names, list(counts))
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, a_in, a_out, idx, over, groups in saved:
            m.active_in, m.active_out, m.in_index, m.weight_override = a_in, a_out, idx, over
            if isinstance(m, QConv2d):
                m.groups = groups


def _read_graph(tp, graph, names: Mapping[nn.Module, str], order: list[nn.Module]) -> ChannelGroups:
    """torch-pruning's groups -> ChannelGroups (plain data), groups in forward order of their first producer."""
    terminal = {n.module for n in graph.module2node.values() if not n.outputs}
    rank = {m: i for i, m in enumerate(order)}
    found: list[tuple[int, ChannelGroup]] = []
    sizes: dict[str, tuple[int, int]] = {}
    for group in graph.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        uses: list[ChannelUse] = []
        producers: list[nn.Module] = []
        fixed = None
        for item in group:
            dep, target = item.dep, item.dep.target
            mod = target.module
            kind = target.type
            if isinstance(mod, nn.Conv2d | nn.Linear | _BatchNorm):
                name = names[mod]
                out_dim = graph.is_out_channel_pruning_fn(dep.handler)
                depthwise = isinstance(mod, nn.Conv2d) and mod.groups > 1
                dim = "out" if out_dim or isinstance(mod, _BatchNorm) else "in"
                use = ChannelUse(name, dim, tuple(int(i) for i in item.idxs), tuple(int(i) for i in item.root_idxs))
                if dim == "out" and use.index != use.channel and not isinstance(mod, _BatchNorm):
                    raise CimnasError(f"layer {name!r} reads the channels of {names.get(group[0].dep.target.module)!r} "
                                      "at an offset (after a concatenation): width search slices a depthwise conv "
                                      "there by prefix only; channel groups cannot be used")
                uses.append(use)
                sizes[name] = _layer_sizes(mod)
                if out_dim and not depthwise and not isinstance(mod, _BatchNorm):
                    producers.append(mod)
                if out_dim and not isinstance(mod, _BatchNorm) and sorted(use.index) != list(range(sizes[name][0])):
                    raise CimnasError(f"only some output channels of layer {name!r} are coupled with "
                                      f"{names.get(group[0].dep.target.module)!r} (a concatenation with a constant, "
                                      "e.g. a zero-padded shortcut?): channel groups cannot be derived")
            elif kind.name == "ELEMENTWISE" and str(getattr(mod, "_grad_fn", "")).startswith(_MOVES):
                raise CimnasError(f"the output channels of {names.get(group[0].dep.target.module, '?')!r} pass "
                                  f"through a {mod._grad_fn} (a channel shuffle?), which width slicing cannot "
                                  "follow: channel groups cannot be derived")
            elif kind.name == "SLICE" and getattr(mod, "dim", 1) != 1:
                pass  # a spatial slice (x[:, :, ::2, ::2], an option-A shortcut) keeps the channels
            elif kind.name in _REFUSED_OPS:
                raise CimnasError(f"the output channels of {names.get(group[0].dep.target.module, '?')!r} pass "
                                  f"through {_REFUSED_OPS[kind.name]} of channels, which width slicing cannot "
                                  "follow: channel groups cannot be derived")
            elif kind.name not in _PASS_OPS:
                raise CimnasError(f"the output channels of {names.get(group[0].dep.target.module, '?')!r} reach "
                                  f"{names.get(mod, type(mod).__name__)!r} ({kind.name}), which width slicing "
                                  "does not handle: channel groups cannot be derived")
            reads_only = isinstance(mod, nn.Conv2d | nn.Linear) and not graph.is_out_channel_pruning_fn(dep.handler)
            if mod in terminal and not reads_only:  # these channels are (part of) the model's output
                fixed = "reaches the model output"
        producers.sort(key=lambda m: rank.get(m, len(rank)))
        if not producers:
            continue
        first = producers[0]
        g = ChannelGroup(names[first], _layer_sizes(first)[0], tuple(names[m] for m in producers),
                         tuple(uses), fixed)
        found.append((rank.get(first, len(rank)), g))
    found.sort(key=lambda t: t[0])
    groups = [g for _, g in found]
    _check_one_channel_per_position(groups)
    check(any(g.fixed is None for g in groups), "the model has no channel group whose width can change (every "
          "conv / Linear output reaches the model output): nothing to search")
    return ChannelGroups(groups, sizes)


def _check_one_channel_per_position(groups: list[ChannelGroup]) -> None:
    """Each input / output position of a layer carries one group channel; a reshape that merges channels (a
    grouped sum over `x.view(n, g, c // g, h, w)`), which torch-pruning counts element-wise, breaks that."""
    seen: dict[tuple[str, str], set[int]] = {}
    for g in groups:
        for u in g.uses:
            taken = seen.setdefault((u.layer, u.dim), set())
            if len(set(u.index)) != len(u.index) or taken & set(u.index):
                raise CimnasError(f"layer {u.layer!r} reads several channels of {g.name!r} at one position (a "
                                  "reshape that merges channels?), which width slicing cannot follow: channel "
                                  "groups cannot be derived")
            taken.update(u.index)
