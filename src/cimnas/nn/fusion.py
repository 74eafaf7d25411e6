"""Fused deployment form of a fully binarized network: integer accumulations and comparators.

A binarized layer computes y = alpha * Z (+ b) with the integer pre-activation
Z = sum_k x_k s_k, x_k in {0, 1} (binary inputs), s_k in {-1, +1} (weight signs), alpha = E|W|
(HAWIS II-A), i.e. a popcount difference on the crossbar. When a BatchNorm's output reaches only
the next layer's binarizer round(clip(., 0, 1)), BN and binarization fold into one per-channel
comparator on Z (HAWIS II-A: "BN and activation binarization can be fused and realized by a
simple comparison"). With s_c = gamma_c / sqrt(var_c + eps) (eval-mode BN):

    out_c = round(clip(s_c (alpha Z + b_c - mu_c) + beta_c, 0, 1)) = [s_c (alpha Z + b_c - mu_c) + beta_c > 1/2]
    T_c = ((1/2 - beta_c) / s_c + mu_c - b_c) / alpha
    s_c > 0:  out = [Z >= floor(T_c) + 1]          (comparator Z >= theta_c)
    s_c < 0:  out = [Z <= ceil(T_c) - 1]           (flipped comparator Z <= theta_c)
    s_c = 0 (gamma 0) or alpha = 0: out = [s_c (b_c - mu_c) + beta_c > 1/2], a constant.

(round(0.5) = 0 in PyTorch, so the binarizer is the strict comparison "> 1/2".) Thresholds are
clipped to [-(fan_in + 1), fan_in + 1], so they are integers of log2(fan_in) + 2 bits.

BNs whose output feeds a residual add (ResNet stem and block outputs, 1x1 shortcuts) become
an integer-affine map per channel, y_c = (s_c alpha) Z + (beta_c + s_c (b_c - mu_c)). The residual
stream is then a sum of per-channel integer-affine terms with *different* real scales, which
has no exact single-integer form; so the residual path is kept exact in float: the adds run in
floating point and the next layer binarizes the sum with the float comparison [x > 1/2]. All
conv/FC accumulations are integers (held in float tensors, exact below 2^24). The classifier
emits alpha * Z + b (logits; argmax could compare integers when b = 0).

Which BNs feed only a binarizer is declared by the model (`fusion_pairs()`, cimnas models) or, for
a converted model (cimnas.nn.convert), traced (`traced_fusion_pairs`: the BN's output tensor reaches one
binary layer, through nn.Identity modules at most, unmodified, and no other operation); other BNs are
fused as integer-affine maps, which is always exact. The fused model
equals the original in eval mode; in float32 the original's own rounding can flip values lying
within ~1e-6 of a threshold, so exact agreement is checked in float64.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from cimnas.errors import CimnasError
from cimnas.nn.forward_scan import probe_forward
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight
from cimnas.nn.refactor import ThermometerInput, _replace, execution_order


class BinaryCode(nn.Module):
    """The binarizer as a comparator: [x > 1/2] == round(clip(x, 0, 1)) (float input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).to(x.dtype)


class _IntegerLayer(nn.Module):
    """Shared part of the fused conv / FC: binary input codes, ±1 weight codes, integer Z."""

    def _init(self, layer: QConv2d | QLinear, emit_integer: bool) -> None:
        if not isinstance(layer.weight_quantizer, BinaryWeight) or not isinstance(
                layer.input_quantizer, BinaryActivation | ThermometerInput):
            raise CimnasError("fuse_model needs a fully binarized model (precision 'binary' with "
                              "binarize_first and binarize_last); a layer has "
                              f"{type(layer.weight_quantizer).__name__}/{type(layer.input_quantizer).__name__}")
        w = layer.active_weight().detach()
        signs, alpha = layer.weight_quantizer.to_integer(w)
        self.register_buffer("signs", signs.clone())  # ±1 codes of the active weight
        self.alpha = float(alpha)  # weight scale E|W|
        b = layer.active_bias()
        self.register_buffer("bias", None if b is None else b.detach().clone())
        self.input_code = (copy.deepcopy(layer.input_quantizer) if isinstance(layer.input_quantizer, ThermometerInput)
                           else BinaryCode())
        self.emit_integer = emit_integer
        self.fan_in = int(signs[0].numel())

    def _emit(self, z: torch.Tensor) -> torch.Tensor:
        if self.emit_integer:
            return z
        out = self.alpha * z
        if self.bias is not None:
            out = out + (self.bias.view(1, -1, 1, 1) if z.dim() == 4 else self.bias)
        return out


class IntegerConv2d(_IntegerLayer):
    """Z = conv({0,1} codes, ±1 codes): an integer popcount difference per output position."""

    def __init__(self, layer: QConv2d, emit_integer: bool):
        super().__init__()
        self._init(layer, emit_integer)
        self.stride, self.padding = layer.stride, layer.padding
        self.dilation, self.groups = layer.dilation, layer.groups
        self.padding_mode = layer.padding_mode
        self.pad = layer._reversed_padding_repeated_twice  # non-zero padding modes pad the codes first (nn.Conv2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.input_code(x)
        padding = self.padding
        if self.padding_mode != "zeros":  # codes of a padded input = padded codes (the binarizer is elementwise)
            bits, padding = F.pad(bits, self.pad, mode=self.padding_mode), 0
        z = torch.round(F.conv2d(bits, self.signs.to(bits.dtype), None, self.stride, padding, self.dilation,
                                 self.groups))
        return self._emit(z)


class IntegerLinear(_IntegerLayer):
    """Z = {0,1} codes @ ±1 codes^T."""

    def __init__(self, layer: QLinear, emit_integer: bool):
        super().__init__()
        self._init(layer, emit_integer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.input_code(x)
        return self._emit(torch.round(F.linear(bits, self.signs.to(bits.dtype))))


def _bn_affine(bn: _BatchNorm, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, mu, beta) of the first c channels of an eval-mode BN, in float64."""
    if bn.running_mean is None:
        raise CimnasError("fuse_model needs BatchNorm layers with running statistics (track_running_stats)")
    mu = bn.running_mean[:c].detach().double()
    var = bn.running_var[:c].detach().double()
    gamma = bn.weight[:c].detach().double() if bn.affine else torch.ones_like(mu)
    beta = bn.bias[:c].detach().double() if bn.affine else torch.zeros_like(mu)
    return gamma / torch.sqrt(var + bn.eps), mu, beta


class ThresholdComparator(nn.Module):
    """BN + binarization folded into per-channel integer comparators on Z (module docstring).

    mode +1: out = [Z >= theta]; mode -1: out = [Z <= theta]; mode 0: out = constant.
    """

    def __init__(self, bn: _BatchNorm, layer: _IntegerLayer, channels: int):
        super().__init__()
        s, mu, beta = _bn_affine(bn, channels)
        b = layer.bias.double() if layer.bias is not None else torch.zeros_like(mu)
        alpha = layer.alpha
        mode = torch.sign(s) if alpha > 0 else torch.zeros_like(s)
        const = (s * (b - mu) + beta > 0.5).double()  # value where the comparator is constant
        safe_s = torch.where(s == 0, torch.ones_like(s), s)
        t = ((0.5 - beta) / safe_s + mu - b) / (alpha if alpha > 0 else 1.0)
        theta = torch.where(s > 0, torch.floor(t) + 1, torch.ceil(t) - 1)
        bound = layer.fan_in + 1
        theta = torch.where(torch.isfinite(theta), theta, torch.sign(theta) * bound).clamp(-bound, bound)
        self.register_buffer("theta", torch.where(mode == 0, torch.zeros_like(theta), theta).long())
        self.register_buffer("mode", mode.to(torch.int8))
        self.register_buffer("const", const.to(torch.int8))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        theta = self.theta.view(shape).to(z.dtype)
        mode = self.mode.view(shape)
        ge, le = z >= theta, z <= theta
        out = torch.where(mode > 0, ge, torch.where(mode < 0, le, self.const.view(shape).bool()))
        return out.to(z.dtype)


class IntegerAffine(nn.Module):
    """BN on an integer accumulation as one per-channel affine map y = scale Z + offset (float)."""

    def __init__(self, bn: _BatchNorm, layer: _IntegerLayer, channels: int):
        super().__init__()
        s, mu, beta = _bn_affine(bn, channels)
        b = layer.bias.double() if layer.bias is not None else torch.zeros_like(mu)
        self.register_buffer("scale", s * layer.alpha)
        self.register_buffer("offset", beta + s * (b - mu))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        return (self.scale.view(shape) * z.double() + self.offset.view(shape)).to(z.dtype)


def bn_producers(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """{bn name: layer name} for every BatchNorm whose input is, unmodified, the output tensor of a QConv2d /
    QLinear (the same tensor object, its in-place version counter unchanged: an in-place activation in between
    breaks the pair) and the only module that receives that tensor. Traced in one shape-only forward pass."""
    names = {m: n for n, m in model.named_modules()}
    made: dict[int, tuple[str, int, torch.Tensor]] = {}  # id(output) -> (layer, version, the tensor kept alive)
    uses: dict[int, int] = {}
    seen: dict[str, int] = {}

    def out_hook(mod, _args, out):
        made[id(out)] = (names[mod], out._version, out)

    def in_hook(mod, args):
        if args and isinstance(args[0], torch.Tensor) and id(args[0]) in made:
            uses[id(args[0])] = uses.get(id(args[0]), 0) + 1
            if isinstance(mod, _BatchNorm) and made[id(args[0])][1] == args[0]._version:
                seen[names[mod]] = id(args[0])

    leaves = [m for m in model.modules() if not list(m.children()) or isinstance(m, QConv2d | QLinear)]
    hooks = [m.register_forward_hook(out_hook) for m in model.modules() if isinstance(m, QConv2d | QLinear)]
    hooks += [m.register_forward_pre_hook(in_hook) for m in leaves]
    try:
        probe_forward(model, input_shape)
    finally:
        for h in hooks:
            h.remove()
    return {bn: made[t][0] for bn, t in seen.items() if uses.get(t) == 1}


_METADATA = {"__get__", "dim", "size", "numel", "ndimension", "element_size"}


class _UseScan(TorchFunctionMode):
    """Records, for each watched tensor, the innermost module in which any torch operation reads it."""

    def __init__(self, watched: dict[int, str], stack: list[str], uses: dict[str, set[str]]):
        super().__init__()
        self.watched, self.stack, self.uses = watched, stack, uses

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _METADATA:  # shape / version reads do not use the values
            return func(*args, **(kwargs or {}))
        for t in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(t, torch.Tensor) and id(t) in self.watched:
                self.uses[self.watched[id(t)]].add(self.stack[-1] if self.stack else "")
        return func(*args, **(kwargs or {}))


def traced_fusion_pairs(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, str]]:
    """(bn, consumer) pairs of a model that declares none: the BN's output tensor is read, unmodified (in-place
    version counter), by one binary-input QConv2d / QLinear (its own forward and quantizers) and otherwise only
    passed through nn.Identity modules; any other reader (a residual add, a second branch, an activation) keeps
    the BN an integer-affine map. Traced in one shape-only forward pass."""
    names = {m: n for n, m in model.named_modules()}
    watched: dict[int, str] = {}  # id(bn output) -> bn name
    keep: list[torch.Tensor] = []  # the outputs stay alive, so their ids stay unique
    version: dict[str, int] = {}
    readers: dict[str, set[str]] = {}  # bn name -> modules whose forward receives its output
    uses: dict[str, set[str]] = {}  # bn name -> innermost modules of the operations reading it
    unmodified: dict[str, bool] = {}
    stack: list[str] = []

    def pre(mod, args):
        for t in args:
            if isinstance(t, torch.Tensor) and id(t) in watched:
                bn = watched[id(t)]
                readers[bn].add(names[mod])
                unmodified[bn] = unmodified.get(bn, True) and t._version == version[bn]
        stack.append(names[mod])

    def post(mod, _args, out):
        if stack and stack[-1] == names[mod]:
            stack.pop()
        if isinstance(mod, _BatchNorm) and isinstance(out, torch.Tensor):
            watched[id(out)], version[names[mod]] = names[mod], out._version
            readers[names[mod]], uses[names[mod]] = set(), set()
            keep.append(out)

    hooks = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post) for m in names]
    try:
        with _UseScan(watched, stack, uses):
            probe_forward(model, input_shape)
    finally:
        for h in hooks:
            h.remove()
    pairs = []
    for bn, mods in readers.items():
        direct = {n for n in mods if not isinstance(model.get_submodule(n), nn.Identity)
                  and not any(n.startswith(o + ".") for o in mods)}  # a layer's quantizer is the layer
        if len(direct) != 1 or not unmodified.get(bn, False):
            continue
        (consumer,) = direct
        layer = model.get_submodule(consumer)
        inside = all(u == consumer or u.startswith(consumer + ".") or
                     (u and isinstance(model.get_submodule(u), nn.Identity)) for u in uses[bn])
        if isinstance(layer, QConv2d | QLinear) and isinstance(layer.input_quantizer, BinaryActivation) and inside:
            pairs.append((bn, consumer))
    return pairs


@torch.no_grad()
def fuse_model(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A copy of a fully binarized model computing with integer accumulations and comparators.

    Every QConv2d/QLinear becomes an IntegerConv2d/IntegerLinear; each BN right after one becomes
    a ThresholdComparator (declared by `model.fusion_pairs()` and its consumer binarizes) or an
    IntegerAffine map. The copy is in eval mode; the original is untouched.
    """
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise CimnasError("fuse_model needs input_shape=(C, H, W) for a model without .input_shape")
    order = execution_order(model, tuple(input_shape))
    pairs = dict(model.fusion_pairs() if hasattr(model, "fusion_pairs") else
                 traced_fusion_pairs(model, tuple(input_shape)))
    producer = bn_producers(model, tuple(input_shape))  # bn name -> the layer whose output it normalizes
    fused = copy.deepcopy(model).eval()
    followed = set(producer.values())

    int_layers: dict[str, _IntegerLayer] = {}
    for name, m in order:
        if isinstance(m, QConv2d | QLinear):
            cls = IntegerConv2d if isinstance(m, QConv2d) else IntegerLinear
            int_layers[name] = cls(m, emit_integer=name in followed)
            _replace(fused, name, int_layers[name])
    for bn_name, layer_name in producer.items():
        bn = model.get_submodule(bn_name)
        layer = int_layers[layer_name]
        channels = int(layer.signs.shape[0])
        consumer = pairs.get(bn_name)
        binarized = consumer is not None and isinstance(
            model.get_submodule(consumer).input_quantizer, BinaryActivation)
        new = (ThresholdComparator if binarized else IntegerAffine)(bn, layer, channels)
        _replace(fused, bn_name, new.to(layer.signs.device))
    fused.fused = True
    return fused


def comparator_bits(fused: nn.Module) -> int:
    """Largest comparator width in bits (sign + magnitude of the integer thresholds)."""
    bounds = [m.theta.abs().max().item() for m in fused.modules() if isinstance(m, ThresholdComparator)]
    return 1 + math.ceil(math.log2(max(bounds) + 1)) if bounds else 0
