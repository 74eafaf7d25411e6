"""Quantizers: autograd functions wrapped in small nn.Modules (larq style).

Every quantizer maps a real tensor to a tensor of a few levels in the forward pass and passes a
(straight-through) gradient in the backward pass. Layers receive quantizers; they never hard-code
them. Each quantizer also exposes `to_integer(x) -> (codes, scale)` with `codes * scale == q(x)`
and integer `codes`, so the hardware model can map values onto devices and DACs:
`bits` is the number of magnitude bits of `codes` (the sign is carried by the differential pair
for weights; activations are unsigned).
"""

from __future__ import annotations

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.registry import Registry

QUANTIZERS = Registry("quantizer")


# ---------------------------------------------------------------- autograd functions
class _RoundSTE(torch.autograd.Function):
    """round(x) with identity gradient (straight-through estimator, Bengio et al. 2013)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.round(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g


# hardtanh_backward(g, x, lo, hi) passes g where lo < x < hi in one kernel (reduced-precision
# inputs are compared in float32). With lo = -(smallest subnormal) and hi = the next value above 1,
# "lo < x < hi" is exactly "0 <= x <= 1" for every non-NaN x of that dtype (-0.0 included). Exact
# as long as subnormals are not flushed to zero (torch.set_flush_denormal(True) is never set here).
_ACT_GRAD_BOUNDS = {torch.float64: (-(2.0**-1074), 1.0 + 2.0**-52)}
_ACT_GRAD_BOUNDS_F32 = (-(2.0**-149), 1.0 + 2.0**-23)  # float32, and bf16/fp16 (compared in float32)


class _BinaryActFn(torch.autograd.Function):
    """I_b = round(clip(x, 0, 1)) (DoReFa, HAWIS II-A); gradient g where 0 <= x <= 1, else 0.

    Fused: round(clip(x, 0, 1)) == [x > 0.5] for every non-NaN x (torch rounds half to even, so
    0.5 -> 0), computed as one comparison written straight into a float tensor; the backward is one
    hardtanh_backward kernel on the saved x. Same kernel count as ReLU's forward and backward.
    NaN inputs give 0 (the unfused formula gave NaN) and an unspecified gradient.
    """

    @staticmethod
    def forward(x):
        return torch.gt(x, 0.5, out=torch.empty_like(x))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        lo, hi = _ACT_GRAD_BOUNDS.get(x.dtype, _ACT_GRAD_BOUNDS_F32)
        return torch.ops.aten.hardtanh_backward(g, x, lo, hi)

    @staticmethod
    def vmap(info, in_dims, x):
        # element-wise: apply to the batched tensor as it is (gt's out= has no batching rule)
        return _BinaryActFn.apply(x), in_dims[0]


class _BinaryWeightFn(torch.autograd.Function):
    """sign(w) * mean|w| with sign(0) = +1 (exactly two values); identity gradient (DoReFa).

    Computed as [w >= 0] * 2a - a, which is exactly +a or -a (2a is exact and 2a - a == a), in
    three kernels on one temporary; torch.where with 0-dim tensors is several times slower.
    """

    @staticmethod
    def forward(w):
        return _signed_mean_abs(w, w.abs().mean())

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g

    @staticmethod
    def vmap(info, in_dims, w):
        # one scale per sample: the mean over every dim but the vmapped one
        if in_dims[0] is None:
            return _BinaryWeightFn.apply(w), None
        w = w.movedim(in_dims[0], 0)
        alpha = w.abs().flatten(1).mean(1).view((-1,) + (1,) * (w.dim() - 1))
        return _signed_mean_abs(w, alpha), 0


def _signed_mean_abs(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """alpha where w >= 0, -alpha elsewhere (alpha broadcasts against w)."""
    return torch.ge(w, 0, out=torch.empty_like(w)).mul_(2 * alpha).sub_(alpha)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return _RoundSTE.apply(x)


# ---------------------------------------------------------------- modules
class Quantizer(nn.Module):
    """Base class. `bits` is None for a pass-through (float) quantizer."""

    bits: int | None = None
    #: True for weight quantizers whose codes are signed (differential pair on the crossbar).
    signed: bool = False

    def to_integer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no integer form")

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@QUANTIZERS.register("identity", "no quantization (float)")
class Identity(Quantizer):
    """Pass-through: y = x. Used for float layers so every layer has the same interface."""

    bits = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@QUANTIZERS.register("binary_act", "activation binarization round(clip(x,0,1)), HAWIS/DoReFa")
class BinaryActivation(Quantizer):
    """I_b = round(clip(x, 0, 1)) in {0, 1} (HAWIS Sec. II-A, DoReFa 1-bit activations).

    Gradient: straight-through, zeroed outside [0, 1] (clipped STE). Exact in any float dtype:
    0, 0.5 and 1 are bf16/fp16 values and comparisons do not round, so under autocast a bf16 input
    gives the {0, 1} output and gradient of its float32 upcast (tests/test_autocast.py).
    """

    bits = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BinaryActFn.apply(x)

    def to_integer(self, x):
        return self.forward(x), torch.tensor(1.0, device=x.device)


@QUANTIZERS.register("binary_weight", "weight binarization sign(w)*E|w|, HAWIS/DoReFa")
class BinaryWeight(Quantizer):
    """W_b = sign(W) * E(|W|) with one scale per tensor (HAWIS Sec. II-A, DoReFa/XNOR).

    Gradient: straight-through, dL/dW = dL/dW_b (DoReFa's 1-bit weight rule).
    """

    bits = 1
    signed = True

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        return w.detach().abs().mean()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _BinaryWeightFn.apply(w)

    def to_integer(self, w):
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype), self.scale(w)


@QUANTIZERS.register("dorefa_weight", "k-bit DoReFa weights (the 8-bit baseline)")
class DoReFaWeight(Quantizer):
    """k-bit DoReFa weights: w_t = tanh(w) / (2 max|tanh w|) + 1/2,  w_q = 2 quant_k(w_t) - 1,
    quant_k(x) = round((2^k - 1) x) / (2^k - 1)  (Zhou et al. 2016, Eq. 9). Values are odd
    multiples of 1/(2^k - 1) in [-1, 1]; the integer code 2q - (2^k - 1) has k magnitude bits.
    """

    signed = True

    def __init__(self, bits: int = 8):
        super().__init__()
        if not 1 <= int(bits) <= 16:
            raise CimnasError(f"dorefa_weight bits must be in 1..16, got {bits}")
        self.bits = int(bits)

    def _levels(self) -> int:
        return 2**self.bits - 1

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(w)
        t = t / (2 * t.detach().abs().max().clamp_min(1e-12)) + 0.5
        n = self._levels()
        return 2 * round_ste(t * n) / n - 1

    def to_integer(self, w):
        n = self._levels()
        q = self.forward(w.detach())
        return torch.round((q + 1) * n / 2) * 2 - n, torch.tensor(1.0 / n, device=w.device)


@QUANTIZERS.register("dorefa_act", "k-bit DoReFa activations")
class DoReFaActivation(Quantizer):
    """k-bit activations: a_q = round((2^k - 1) clip(x, 0, 1)) / (2^k - 1); clipped STE."""

    def __init__(self, bits: int = 8):
        super().__init__()
        if not 1 <= int(bits) <= 16:
            raise CimnasError(f"dorefa_act bits must be in 1..16, got {bits}")
        self.bits = int(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = 2**self.bits - 1
        return round_ste(torch.clamp(x, 0.0, 1.0) * n) / n

    def to_integer(self, x):
        n = 2**self.bits - 1
        return torch.round(torch.clamp(x, 0.0, 1.0) * n), torch.tensor(1.0 / n, device=x.device)


@QUANTIZERS.register("fixed_point", "signed fixed point with integer and fraction bits (UAE)")
class FixedPoint(Quantizer):
    """Signed fixed point: step = 2^-frac, range [-2^(int-1), 2^(int-1) - step] (int >= 1) or
    [-1/2, 1/2 - step] for int = 0 (the convention of UAE/NACIM's public code, REFERENCE-FACTS).
    q(x) = clip(round(x / step) * step). Gradient: straight-through inside the range, 0 outside.
    """

    signed = True

    def __init__(self, int_bits: int = 1, frac_bits: int = 6):
        super().__init__()
        if int_bits < 0 or frac_bits < 0 or int_bits + frac_bits < 1 or int_bits + frac_bits > 31:
            raise CimnasError(
                f"fixed_point needs int_bits >= 0, frac_bits >= 0 and 1 <= int+frac <= 31, "
                f"got int_bits={int_bits}, frac_bits={frac_bits}"
            )
        self.int_bits, self.frac_bits = int(int_bits), int(frac_bits)
        self.bits = self.int_bits + self.frac_bits
        self.step = 2.0**-self.frac_bits
        half = 2.0 ** (self.int_bits - 1) if self.int_bits >= 1 else 0.5
        self.lo, self.hi = -half, half - self.step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = torch.clamp(x, self.lo, self.hi)
        return round_ste(xc / self.step) * self.step

    def to_integer(self, x):
        return torch.round(torch.clamp(x, self.lo, self.hi) / self.step), torch.tensor(self.step, device=x.device)

    def extra_repr(self) -> str:
        return f"int_bits={self.int_bits}, frac_bits={self.frac_bits}"


def make_quantizer(spec: str | dict | None) -> Quantizer:
    """Build a quantizer from a name ('binary_act') or {'name': ..., **kwargs}; None -> identity."""
    if spec is None:
        return Identity()
    if isinstance(spec, str):
        return QUANTIZERS.create(spec)
    spec = dict(spec)
    name = spec.pop("name", None)
    if name is None:
        raise CimnasError("a quantizer spec needs a 'name'; valid: " + ", ".join(QUANTIZERS.names()))
    try:
        return QUANTIZERS.create(name, **spec)
    except TypeError as e:
        raise CimnasError(f"bad arguments for quantizer {name!r}: {e}") from e
