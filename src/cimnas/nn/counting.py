"""Layer geometry by shape tracing, and operation counts (HAWIS Tables III/IV columns).

`trace_layers(model, input_shape)` runs one forward pass with hooks and returns one `LayerGeom`
per QConv2d / QLinear in execution order, with the *active* (sliced) channel counts. The
hardware energy model and the HAWIS state space both read these records.

`arch_geometry(name, ...)` gives the same records for a registered model *without building it*:
CIFAR ResNets are laid out in closed form (microseconds; `tests/test_energy_mnsim.py` checks the
records equal `trace_layers` of the built model), any other model is built on PyTorch's `meta`
device (no weights allocated) and traced there.

Counting convention (HAWIS Tables III/IV, Bi-Real/BATS): a multiply-accumulate whose weight and
input are both 1-bit is one binary operation (BiOp); any other MAC is one FLOP. A fully binarized
network therefore has 0 FLOPs in its conv/FC layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.limits import check_params
from cimnas.nn.forward_scan import probe_forward
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.models import MODELS, PRECISIONS, build_model
from cimnas.nn.models._common import check_widths, image_hw, named_widths, uniform_widths
from cimnas.nn.refactor import RefactorOptions


@dataclass(frozen=True)
class LayerGeom:
    """Geometry of one conv or FC layer as executed (after slicing)."""

    name: str
    kind: str  # "conv" or "fc"
    in_channels: int  # conv: input channels; fc: input features
    out_channels: int  # conv: output channels; fc: output features
    kernel_size: int  # 1 for fc
    stride: int
    in_hw: tuple[int, int]  # input feature-map height, width ((1, 1) for fc)
    out_hw: tuple[int, int]  # output feature-map height, width ((1, 1) for fc)
    weight_bits: int | None  # magnitude bits of the weight codes; None = float
    act_bits: int | None  # bits of the layer's input activations; None = float
    act_signed: bool = False  # input codes carry a sign (one more DAC cycle); {0, 1} / unsigned = False
    groups: int = 1  # grouped conv (depthwise: groups = C_in), mapped block-diagonally (see `rows`)

    @property
    def rows(self) -> int:
        """Crossbar rows of the unrolled weight matrix: k*k*C_in (conv) or in_features (fc). A grouped conv is
        mapped as one block-diagonal matrix (k*k*C_in rows x C_out columns, group g's k*k*C_in/groups rows
        feeding its C_out/groups columns, the other cells at Gmin), so its rows count the whole input."""
        return self.kernel_size * self.kernel_size * self.in_channels

    @property
    def params(self) -> int:
        """Weights (cells holding a value): rows x C_out / groups."""
        return self.rows * self.out_channels // self.groups

    @property
    def positions(self) -> int:
        """Output positions per inference (one matrix-vector product each)."""
        return self.out_hw[0] * self.out_hw[1]

    @property
    def macs(self) -> int:
        return self.params * self.positions

    @property
    def is_binary(self) -> bool:
        return self.weight_bits == 1 and self.act_bits == 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(rows=self.rows, params=self.params, macs=self.macs)
        return d


def trace_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerGeom]:
    """One forward pass on zeros of shape (1, *input_shape); returns the executed layers in order.
    A non-square conv kernel is refused (the crossbar packing of MNSIM is per k x k kernel)."""
    records: list[LayerGeom] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(mod, inputs, output):
        x = inputs[0]
        w = mod.effective_weight() if mod.weight_override is None else mod.weight_override
        wbits = mod.weight_quantizer.bits
        abits = mod.input_quantizer.bits
        signed = bool(getattr(mod.input_quantizer, "signed", False))
        if isinstance(mod, QConv2d):
            kh, kw = (int(k) for k in mod.kernel_size)
            if kh != kw:
                raise CimnasError(f"layer {names[mod]!r} has a {kh}x{kw} kernel; the crossbar model maps square "
                                  f"kernels only: keep it digital (rule {{{names[mod]!r}: 'digital'}})")
            g = int(mod.groups)
            records.append(LayerGeom(
                names[mod], "conv", int(w.shape[1]) * g, int(w.shape[0]), kh,
                int(mod.stride[0]), (int(x.shape[2]), int(x.shape[3])),
                (int(output.shape[2]), int(output.shape[3])), wbits, abits, signed, g))
        else:
            # a Linear on (1, *tokens, F) computes one matrix-vector product per token: positions = prod(tokens)
            tokens = int(x.numel() // max(1, x.shape[-1]) // max(1, x.shape[0])) if x.dim() > 2 else 1
            records.append(LayerGeom(names[mod], "fc", int(w.shape[1]), int(w.shape[0]), 1, 1,
                                     (1, 1), (tokens, 1), wbits, abits, signed))

    for m in model.modules():
        if isinstance(m, QConv2d | QLinear):
            hooks.append(m.register_forward_hook(hook))
    try:
        probe_forward(model, tuple(input_shape))  # shapes only: on the meta device where it can
    finally:
        for h in hooks:
            h.remove()
    return records


# ---------------------------------------------------------------- geometry without a model
def _layer_bits(precision: str, bits: int, refactor: dict, first: bool, last: bool) -> tuple[Any, Any]:
    """(weight bits, input bits) of one layer as `build_model` would quantize it."""
    if precision == "kbit":
        return bits, bits
    if precision == "binary":
        keep_float = (first and not refactor.get("binarize_first", True)) or (
            last and not refactor.get("binarize_last", True))
        return (None, None) if keep_float else (1, 1)
    return None, None


def _resnet_cifar_geometry(depth: int, widths: Sequence[int], in_channels: int, num_classes: int,
                           hw: tuple[int, int], precision: str, bits: int, refactor: dict,
                           shortcut: str) -> list[LayerGeom]:
    """The executed layers of `CifarResNet` (cimnas.nn.models.resnet_cifar) in closed form."""
    n = (depth - 2) // 6
    thermo = precision == "binary" and refactor.get("thermometer", False)
    c_in = in_channels * (int(refactor.get("thermometer_levels", 32)) if thermo else 1)
    wb, ab = _layer_bits(precision, bits, refactor, True, False)
    h, w = hw
    out = [LayerGeom("conv1", "conv", c_in, widths[0], 3, 1, (h, w), (h, w), wb, ab)]
    wb, ab = _layer_bits(precision, bits, refactor, False, False)
    stream, i = widths[0], 1
    for stage in range(3):
        for b in range(n):
            k = stage * n + b
            s = 2 if stage > 0 and b == 0 else 1
            ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
            c1, c2 = widths[i], widths[i + 1]
            out.append(LayerGeom(f"blocks.{k}.conv1", "conv", stream, c1, 3, s, (h, w), (ho, wo), wb, ab))
            out.append(LayerGeom(f"blocks.{k}.conv2", "conv", c1, c2, 3, 1, (ho, wo), (ho, wo), wb, ab))
            if shortcut == "B" and s > 1:
                out.append(LayerGeom(f"blocks.{k}.shortcut_conv", "conv", stream, c2, 1, s, (h, w), (ho, wo),
                                     wb, ab))
            stream, i, h, w = c2, i + 2, ho, wo
    flatten = precision == "binary" and refactor.get("topology_mod", True)
    wb, ab = _layer_bits(precision, bits, refactor, False, True)
    out.append(LayerGeom("fc", "fc", stream * (h * w if flatten else 1), num_classes, 1, 1, (1, 1), (1, 1), wb, ab))
    return out


def arch_geometry(name: str, *, in_channels: int = 3, num_classes: int = 10, image_size: Any = 32,
                  widths: Sequence[int] | str | None = None, width_mult: float = 1.0, precision: str = "binary",
                  bits: int = 8, refactor: Any = None, **kw: Any) -> list[LayerGeom]:
    """`trace_layers(build_model(name, ...), input_shape)` without allocating any weight.

    Same arguments as `cimnas.nn.models.build_model`. CIFAR ResNets take the closed form above
    (after the same validation as the builder); any other model is built and traced on the `meta` device.
    """
    MODELS.get(name)
    depth = {"resnet20": 20, "resnet32": 32, "resnet56": 56, "resnet110": 110}.get(name)
    shortcut = kw.get("shortcut", "A")
    if depth is None or set(kw) - {"shortcut"} or precision not in PRECISIONS or shortcut not in ("A", "B"):
        with torch.device("meta"):  # no weights allocated; the builder's own checks still run
            model = build_model(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                                widths=widths, width_mult=width_mult, precision=precision, bits=bits,
                                refactor=refactor, **kw)
        return _within_limits(name, trace_layers(model, model.input_shape))
    hw = image_hw(image_size)
    if refactor is not None and precision != "binary":
        raise CimnasError("refactor options apply only to precision='binary'; drop them or set precision: binary")
    opts = asdict(RefactorOptions.from_any(refactor)) if precision == "binary" else {}
    if precision == "kbit" and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16):
        raise CimnasError(f"bits must be an integer in 1..16 for precision 'kbit', got {bits!r}")
    n = (depth - 2) // 6
    base = [16] + [16] * (2 * n) + [32] * (2 * n) + [64] * (2 * n)
    if isinstance(widths, str):
        widths = named_widths(name, widths)
    elif widths is None:
        widths = uniform_widths(base, width_mult) if width_mult != 1.0 else base
    widths = check_widths(name, widths, len(base), "conv layer")
    if min(hw) < 4:
        raise CimnasError(f"input of shape {(in_channels, *hw)} is too small for {name}; use a larger image_size")
    return _within_limits(name, _resnet_cifar_geometry(depth, widths, in_channels, num_classes, hw, precision, bits,
                                                       opts, shortcut))


def _within_limits(name: str, layers: list[LayerGeom]) -> list[LayerGeom]:
    """The one parameter limit (cimnas.limits) for a geometry too: an energy estimate of a model nobody could
    build is refused like the model itself."""
    check_params(sum(g.params for g in layers), f"model {name}")
    return layers


def count_ops(layers: list[LayerGeom]) -> dict:
    """BiOps and FLOPs per layer and in total (see module docstring for the convention)."""
    per_layer = []
    for g in layers:
        biops = g.macs if g.is_binary else 0
        flops = 0 if g.is_binary else g.macs
        per_layer.append({"name": g.name, "biops": biops, "flops": flops, "params": g.params})
    return {
        "biops": sum(r["biops"] for r in per_layer),
        "flops": sum(r["flops"] for r in per_layer),
        "params": sum(r["params"] for r in per_layer),
        "layers": per_layer,
    }
