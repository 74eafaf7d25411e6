"""Integer-only residual path: residual streams in fixed point of B bits, and its PyTorch reference.

`cimnas.nn.fusion.fuse_model` turns every conv / FC into an integer accumulation Z and every BN + binarizer
into a comparator, but the BNs that feed residual adds stay per-channel affine maps y_c = a_c Z + b_c in float
(their real scales differ). Here each residual *stream* (the tensor the adds build up, channel index c) is
carried as a saturating integer X_c of B bits, x_c ~ X_c / 2^F_c, with one exponent F_c per stream channel:

    term:        X_c = sat_B( floor( (M_c Z + N_c) / 2^R ) ),  M_c = round(a_c 2^(F_c+R)),
                                                              N_c = round(b_c 2^(F_c+R)) + 2^(R-1)
    add:         X = sat_B(X_term + X_shortcut)            (option A: subsample, zero-pad / truncate channels)
    binarizer:   [x_c > 1/2]  ->  [X_c >= theta_c],  theta_c = floor(2^(F_c-1)) + 1
    sat_B(v) = clip(v, -2^(B-1), 2^(B-1) - 1),  R = MULT_SHIFT (integer multiplier M, arithmetic shift R).

F_c is the largest exponent for which the stream provably fits B bits: every term is bounded by its integer
range (binary inputs, +-1 weights: Z in [-n_neg_c, n_pos_c], so |a_c Z + b_c| <= t_c), the stream of one
segment is a sum of its terms, so |x_c| <= sum t_c and F_c = floor(log2((2^(B-1) - 1) / sum t_c)). The bound
needs no data; saturation is kept as the hardware's safety net. A segment is a run of blocks joined by identity
(option-A) shortcuts; an option-B block (1x1 conv shortcut) starts a new one.

The classifier emits integer logits Z_j 2^P + round(b_j / alpha 2^P) (P = LOGIT_SHIFT): the same argmax as
alpha Z + b up to ties closer than alpha 2^-P.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from cimnas.deploy.streams import trace_streams
from cimnas.errors import CimnasError, check
from cimnas.nn.fusion import IntegerAffine, ThresholdComparator, _IntegerLayer, bn_producers, fuse_model
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight, DoReFaActivation, DoReFaWeight
from cimnas.nn.refactor import ThermometerInput, _replace, execution_order

MULT_SHIFT = 16  # R: fraction bits of the requantization multipliers
LOGIT_SHIFT = 16  # P: fraction bits of the classifier's integer bias
MIN_BITS, MAX_BITS = 2, 32


def integer_kind(model: nn.Module) -> str:
    """'binary' (every conv / FC binarized) or 'kbit' (every one DoReFa k-bit); else a one-line error naming
    the first layer that is neither."""
    layers = [(n, m) for n, m in execution_order(model, tuple(model.input_shape)) if isinstance(m, QConv2d | QLinear)]
    check(bool(layers), "the model has no QConv2d / QLinear layers to export")
    kinds = []
    for name, m in layers:
        wq, aq = m.weight_quantizer, m.input_quantizer
        if isinstance(wq, BinaryWeight) and isinstance(aq, BinaryActivation | ThermometerInput):
            kinds.append("binary")
        elif isinstance(wq, DoReFaWeight) and isinstance(aq, DoReFaActivation):
            kinds.append("kbit")
        else:
            raise CimnasError(
                f"layer {name} is not integer ({type(wq).__name__} weights, {type(aq).__name__} inputs): the integer "
                "path needs every conv / FC binarized (train with model.precision: binary and binarize_first / "
                "binarize_last true) or every one k-bit (model.precision: kbit, the k-bit export)")
    if len(set(kinds)) > 1:
        raise CimnasError(f"the model mixes binary and k-bit layers ({layers[kinds.index('kbit')][0]} is k-bit); "
                          "export a model that is fully binary or fully k-bit")
    return kinds[0]


def check_bits(bits: int) -> int:
    check(not isinstance(bits, bool) and isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS,
          f"--residual-bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


# ---------------------------------------------------------------- integer modules of the reference
class FixedAffine(nn.Module):
    """A residual term: X = sat_B(floor((M Z + N) / 2^R)) per channel (module docstring)."""

    def __init__(self, mult: torch.Tensor, offset: torch.Tensor, bits: int, exponent: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mult", mult.long())
        self.register_buffer("offset", offset.long())
        # F_c of the stream this term adds into: the real value is X / 2^F_c (exported; not used to compute)
        self.register_buffer("exponent", torch.zeros_like(self.mult) if exponent is None else exponent.long())
        self.bits = bits

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        x = (self.mult.view(shape) * z.round().long() + self.offset.view(shape)) >> MULT_SHIFT
        return saturate(x, self.bits).to(z.dtype)


class Saturate(nn.Module):
    """sat_B after a residual add (replaces the Identity left where the ReLU was)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return saturate(x, self.bits)


class StreamCode(nn.Module):
    """The binarizer on a fixed-point stream: [X_f >= theta_f] per input feature (channel, or flattened)."""

    def __init__(self, theta: torch.Tensor):
        super().__init__()
        self.register_buffer("theta", theta.long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
        return (x >= self.theta.view(shape).to(x.dtype)).to(x.dtype)


class IntegerLogits(nn.Module):
    """Classifier with integer logits Z 2^P + round(b / alpha 2^P) (module docstring)."""

    def __init__(self, layer: _IntegerLayer):
        super().__init__()
        layer.emit_integer = True
        self.layer = layer
        self.register_buffer("bias_int", logit_bias(layer.bias, layer.alpha, int(layer.signs.shape[0])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.layer(x).round().long()
        return (z * 2**LOGIT_SHIFT + self.bias_int).double()


def saturate(x: torch.Tensor, bits: int) -> torch.Tensor:
    return x.clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def logit_bias(bias: torch.Tensor | None, alpha: float, classes: int) -> torch.Tensor:
    """round(b / alpha 2^P) as int64 (zeros without a bias)."""
    if bias is None:
        return torch.zeros(classes, dtype=torch.long)
    check(alpha > 0, "the classifier's weight scale is 0 (all weights zero); the checkpoint is degenerate")
    return torch.round(bias.detach().double().cpu() / alpha * 2**LOGIT_SHIFT).long()


def stream_threshold(exponents: torch.Tensor) -> torch.Tensor:
    """theta_c = floor(2^(F_c - 1)) + 1: [X_c >= theta_c] == [X_c / 2^F_c > 1/2] for integer X_c."""
    return torch.where(exponents >= 1, 2 ** (exponents - 1).clamp_min(0), torch.zeros_like(exponents)) + 1


# ---------------------------------------------------------------- residual streams
def term_bound(affine: IntegerAffine, layer: _IntegerLayer, bn: nn.Module, sigmas: float | None) -> torch.Tensor:
    """t_c = max |a_c Z + b_c| over Z in [-n_neg_c, n_pos_c] (binary inputs, +-1 weights); with `sigmas` = k,
    at most |beta_c| + k |gamma_c| (the BN output's mean and std on the training data: k standard deviations)."""
    signs = layer.signs.flatten(1).double()
    n_pos, n_neg = (signs > 0).sum(1).double(), (signs < 0).sum(1).double()
    a, b = affine.scale.double(), affine.offset.double()
    bound = torch.maximum((a * n_pos + b).abs(), (-a * n_neg + b).abs())
    if sigmas is None or not getattr(bn, "affine", False):
        return bound
    c = bound.numel()
    stat = bn.bias[:c].detach().double().abs() + sigmas * bn.weight[:c].detach().double().abs()
    return torch.minimum(bound, stat)


def segment_exponents(bounds: list[torch.Tensor], bits: int) -> torch.Tensor:
    """F_c = floor(log2((2^(B-1) - 1) / sum_terms t_c)) over the segment's channels (module docstring)."""
    total = torch.zeros(max(int(t.numel()) for t in bounds), dtype=torch.float64)
    for t in bounds:
        total[: t.numel()] += t
    q = 2 ** (bits - 1) - 1
    f = torch.floor(torch.log2(q / total.clamp_min(1e-300)))
    return f.clamp(-60, 60).long()


def fixed_affine(affine: IntegerAffine, exponents: torch.Tensor, bits: int) -> FixedAffine:
    """M_c, N_c of one term in the stream's exponents (module docstring)."""
    f = exponents[: affine.scale.numel()].double()
    mult = torch.round(affine.scale.double() * 2 ** (f + MULT_SHIFT))
    off = torch.round(affine.offset.double() * 2 ** (f + MULT_SHIFT)) + 2 ** (MULT_SHIFT - 1)
    check(bool(mult.abs().max() < 2**52) and bool(off.abs().max() < 2**52),
          "a residual multiplier exceeds 52 bits; lower --residual-bits")
    return FixedAffine(mult.long(), off.long(), bits, exponents[: affine.scale.numel()])


# ---------------------------------------------------------------- the reference model
def _chain_comparators(model: nn.Module, fused: nn.Module) -> None:
    """A binarized layer with no BN after it feeds the next binarizer [alpha Z + b > 1/2]: make it a comparator
    (a BN of s = 1, mu = 0, beta = 0 in place of the Identity that follows the layer)."""
    order = execution_order(model, tuple(model.input_shape))
    for i, (name, m) in enumerate(order[:-1]):
        nxt_name, nxt = order[i + 1]
        if isinstance(m, QConv2d | QLinear) and isinstance(nxt, nn.Identity) and name != _last_layer(order):
            layer = fused.get_submodule(name)
            c = int(layer.signs.shape[0])
            bn = (nn.BatchNorm2d if isinstance(m, QConv2d) else nn.BatchNorm1d)(c, eps=0.0).double().eval()
            layer.emit_integer = True
            _replace(fused, nxt_name, ThresholdComparator(bn, layer, c))


def _last_layer(order) -> str:
    return [n for n, m in order if isinstance(m, QConv2d | QLinear)][-1]


def _fix_streams(model: nn.Module, fused: nn.Module, bits: int, sigmas: float | None, plan: dict) -> nn.Module:
    """Residual BNs -> FixedAffine in their segment's exponents, stream readers -> StreamCode, a Saturate after
    every add; segments, readers and adds come from the traced graph (`cimnas.deploy.streams`). Returns the
    fused model as an fx.GraphModule with the Saturate nodes."""
    shape = tuple(model.input_shape)
    sg = trace_streams(fused, shape)
    producer = bn_producers(model, shape)
    exps = []
    for seg in sg.segments:
        bounds = [term_bound(fused.get_submodule(bn), fused.get_submodule(producer[bn]), model.get_submodule(bn),
                             sigmas) for bn in seg]
        exps.append(segment_exponents(bounds, bits))
        plan["segments"].append({"writers": list(seg), "exponents": exps[-1]})
        for bn in seg:
            _replace(fused, bn, fixed_affine(fused.get_submodule(bn), exps[-1], bits))
    for name, stream in sg.readers.items():
        layer = fused.get_submodule(name)
        theta = stream_threshold(exps[sg.reader_segment[name]][: stream.channels])
        if stream.flat:  # the classifier reads the flattened (c, h, w) stream: theta per position
            theta = torch.repeat_interleave(theta, stream.positions)
        check(theta.numel() == int(layer.signs.shape[1]), f"layer {name} reads {layer.signs.shape[1]} inputs from a "
              f"stream of {theta.numel()} values")
        layer.input_code = StreamCode(theta)
        plan["readers"][name] = theta
    plan["graph"] = sg
    gm = fx.GraphModule(fused, sg.graph, class_name=type(model).__name__ + "Fixed")
    for k, node in enumerate(sg.adds):
        gm.add_module(f"saturate_{k}", Saturate(bits))
        with gm.graph.inserting_after(node):
            sat = gm.graph.call_module(f"saturate_{k}", (node,))
        node.replace_all_uses_with(sat, delete_user_cb=lambda user, sat=sat: user is not sat)
    gm.recompile()
    return gm


@torch.no_grad()
def fixed_residual_model(model: nn.Module, bits: int, sigmas: float | None = None) -> tuple[nn.Module, dict]:
    """The fused model (`fuse_model`) with B-bit integer residual streams and integer logits: every value it
    computes is an integer (held in float tensors, exact below 2^24). Returns (model, plan) where plan holds the
    stream exponents per segment and the reader thresholds (`lower` exports the same numbers)."""
    check_bits(bits)
    check(integer_kind(model) == "binary", "the integer residual path is for binarized models; a k-bit model "
          "is exported as it is (cimnas export lowers it without residual streams)")
    fused = fuse_model(model)
    plan: dict = {"bits": bits, "segments": [], "readers": {}}
    last = _last_layer(execution_order(model, tuple(model.input_shape)))
    if any(isinstance(m, IntegerAffine) for m in fused.modules()):  # BNs feeding residual adds
        fused = _fix_streams(model, fused, bits, sigmas, plan)
    else:
        _chain_comparators(model, fused)
    _replace(fused, last, IntegerLogits(fused.get_submodule(last)))
    return fused, plan


__all__ = ["FixedAffine", "IntegerLogits", "Saturate", "StreamCode", "fixed_residual_model", "integer_kind",
           "logit_bias"]
