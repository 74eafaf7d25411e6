"""HAWIS network re-factorization (Sec. III-A-1): a float model -> a fully binarized one.

`refactor(model, options, input_shape)` edits the model in place (and returns it):

1. Binarization function insertion: every QConv2d / QLinear gets the `binary_weight` weight
   quantizer W_b = sign(W) E|W| and the `binary_act` input quantizer I_b = round(clip(I, 0, 1))
   (HAWIS II-A), first and last layer included (switches `binarize_first` / `binarize_last`).
   The first layer either binarizes the raw input or, with `thermometer`, receives a
   thermometer code of it (`ThermometerInput`, its input channels widened by `levels`).
2. Activation layers (ReLU, sigmoid, tanh modules) become Identity: binarization is the
   non-linearity.
3. Each max-pool is removed and the conv executed right before it gets its stride multiplied by
   the pool's stride (stride 1 -> 2 as in the paper; it keeps the feature-map size).
4. Topology modification (TM, switch `topology_mod`): the avg-pool before the classifier becomes
   Identity, so activations are flattened; the classifier is rebuilt with C*H*W inputs (traced).

BatchNorm layers stay where they are, so every binarized layer sees conv -> BN -> binarize, the
order that lets cimnas.nn.fusion fold BN + binarization into integer comparators. Residual adds
keep their option-A zero-pad / truncate shortcuts. Activations and pools must be modules (not
functional calls) to be removed; the models of `cimnas.nn.models` are built that way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear, ThermometerEncoding
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight, DoReFaActivation, DoReFaWeight, Identity, Quantizer

ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.LeakyReLU, nn.GELU, nn.SiLU)
AVGPOOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)


@dataclass
class RefactorOptions:
    """Switches of the re-factorization (HAWIS III-A-1 and Table I)."""

    topology_mod: bool = True  # remove the avg-pool before the classifier and flatten (TM)
    thermometer: bool = False  # feed the first layer a thermometer code of the input
    thermometer_levels: int = 32  # binary planes per input channel (authors' code: 32 -> 96 for RGB)
    binarize_first: bool = True  # binarize the first layer's weights and input
    binarize_last: bool = True  # binarize the classifier's weights and input

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "thermometer_levels":
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise CimnasError(f"refactor.thermometer_levels must be a positive integer, got {v!r}")
            elif not isinstance(v, bool):
                raise CimnasError(f"refactor.{f.name} must be true or false, got {v!r}")
        if self.thermometer and not self.binarize_first:
            raise CimnasError("refactor.thermometer needs binarize_first=true (the code feeds a binary first layer)")

    @classmethod
    def from_any(cls, obj: RefactorOptions | dict | None) -> RefactorOptions:
        """Options from None (defaults), a dict (unknown keys are errors) or an instance."""
        if obj is None:
            opts = cls()
        elif isinstance(obj, cls):
            opts = cls(**asdict(obj))
        elif isinstance(obj, dict):
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(obj) - names)
            if unknown:
                raise CimnasError(f"unknown refactor option(s) {unknown}; valid: {', '.join(sorted(names))}")
            opts = cls(**obj)
        else:
            raise CimnasError(f"refactor options must be a dict or RefactorOptions, got {type(obj).__name__}")
        opts.validate()
        return opts


class ThermometerInput(Quantizer):
    """Input 'quantizer' of the first layer: a thermometer code with `levels` planes per channel.

    (N, C, H, W) -> (N, C*levels, H, W) and (N, F) -> (N, F*levels), values in {0, 1}, plane i of
    channel c is [x_c > (i + 0.5) / levels] (cimnas.nn.layers.ThermometerEncoding). No gradient
    flows to the input (it is data).
    """

    bits = 1

    def __init__(self, levels: int = 32):
        super().__init__()
        self.levels = int(levels)
        self.encode = ThermometerEncoding(self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.encode(x)
        t = self.encode.thresholds.view(1, 1, -1).to(x.dtype)
        return (x.unsqueeze(-1) > t).to(x.dtype).flatten(1)

    def to_integer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(x), torch.tensor(1.0, device=x.device)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class _Stop(Exception):
    pass


def execution_order(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, nn.Module]]:
    """Leaf modules (and Q layers) in the order one forward pass first calls them."""
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def hook(mod, _inp, _out):
        if id(mod) not in seen:
            seen.add(id(mod))
            order.append((names[mod], mod))

    hooks = []
    for _, m in model.named_modules():
        if isinstance(m, QConv2d | QLinear) or (not list(m.children()) and not isinstance(m, Quantizer)):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_probe(model, input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


def _probe(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    p = next(model.parameters(), None)
    kw = {"device": p.device, "dtype": p.dtype} if p is not None else {}
    return torch.zeros((1, *input_shape), **kw)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _q_layers(order):
    return [(n, m) for n, m in order if isinstance(m, QConv2d | QLinear)]


def _remove_max_pools(model: nn.Module, order) -> None:
    """Max-pool -> Identity; the conv executed before it gets stride * pool stride (HAWIS III-A-1)."""
    last_conv = None
    for name, m in order:
        if isinstance(m, nn.Conv2d):  # QConv2d, or a conv a convert() rule keeps digital
            last_conv = m
        elif isinstance(m, nn.MaxPool2d | nn.AdaptiveMaxPool2d):
            if isinstance(m, nn.AdaptiveMaxPool2d) or last_conv is None:
                raise CimnasError(f"cannot re-factorize max-pool {name!r}: it has no preceding conv with a "
                                  "fixed stride; build the model without it")
            s = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
            last_conv.stride = (last_conv.stride[0] * int(s[0]), last_conv.stride[1] * int(s[1]))
            _replace(model, name, nn.Identity())


def _remove_classifier_pool(model: nn.Module, order) -> None:
    """Topology modification: the last avg-pool executed before the last linear layer -> Identity."""
    q = _q_layers(order)
    if not q or not isinstance(q[-1][1], QLinear):
        return
    last_fc = q[-1][1]
    pool_name = None
    for name, m in order:
        if m is last_fc:
            break
        if isinstance(m, AVGPOOL_TYPES):
            pool_name = name
    if pool_name is not None:
        _replace(model, pool_name, nn.Identity())


def _thermometer_first(model: nn.Module, order, levels: int) -> None:
    """Replace the first layer by one that takes `levels` binary planes per input channel."""
    name = _q_layers(order)[0][0]
    old = model.get_submodule(name)  # the current module (an earlier step may have rebuilt it)
    q = ThermometerInput(levels)
    if isinstance(old, QConv2d):
        new = QConv2d(old.in_channels * levels, old.out_channels, old.kernel_size[0], stride=old.stride[0],
                      padding=old.padding[0], bias=old.bias is not None, input_quantizer=q,
                      weight_quantizer=old.weight_quantizer)
        new.stride = old.stride
    else:
        new = QLinear(old.in_features * levels, old.out_features, bias=old.bias is not None,
                      input_quantizer=q, weight_quantizer=old.weight_quantizer)
    _replace(model, name, new.to(device=old.weight.device, dtype=old.weight.dtype))


def _first_mismatched_linear(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, int] | None:
    """(name, traced input features) of the first unsliced QLinear fed the wrong size, else None."""
    names = {m: n for n, m in model.named_modules()}
    found: list[tuple[str, int]] = []

    def pre(mod, args):
        q = mod.input_quantizer
        expected = mod.in_features // q.levels if isinstance(q, ThermometerInput) else mod.in_features
        if mod.active_in is None and args[0].shape[-1] != expected:
            found.append((names[mod], int(args[0].shape[-1])))
            raise _Stop

    hooks = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, QLinear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_probe(model, input_shape))
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found[0] if found else None


def rebuild_linear_inputs(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Rebuild every (unsliced) QLinear whose traced input size differs from its in_features."""
    for _ in range(len(list(model.modules())) + 1):
        hit = _first_mismatched_linear(model, input_shape)
        if hit is None:
            return
        name, features = hit
        old = model.get_submodule(name)
        new = QLinear(features, old.out_features, bias=old.bias is not None,
                      input_quantizer=old.input_quantizer, weight_quantizer=old.weight_quantizer)
        _replace(model, name, new.to(device=old.weight.device, dtype=old.weight.dtype))
    raise CimnasError("could not resolve the classifier input sizes after re-factorization")


def modify_topology(model: nn.Module, input_shape: tuple[int, ...], opts: RefactorOptions,
                    keep: tuple[str, ...] = ()) -> None:
    """Steps 2-4 of the module docstring (and the thermometer first layer), in place: activation modules ->
    Identity, max-pools folded into the stride of the conv before them, with `opts.topology_mod` the avg-pool
    before the classifier -> Identity (the classifier re-sized). Modules inside `keep` (names of subtrees kept
    digital by `cimnas.convert` rules) are left as they are."""
    order = [(n, m) for n, m in execution_order(model, input_shape) if not _inside(n, keep)]
    _remove_max_pools(model, order)
    for name, m in list(model.named_modules()):
        if isinstance(m, ACTIVATION_TYPES) and not _inside(name, keep):
            _replace(model, name, nn.Identity())
    if opts.topology_mod:
        _remove_classifier_pool(model, order)
    rebuild_linear_inputs(model, input_shape)
    if opts.thermometer:
        _thermometer_first(model, order, opts.thermometer_levels)


def _inside(name: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def refactor(model: nn.Module, options: RefactorOptions | dict | None = None,
             input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Turn a float cimnas model into a fully binarized one in place (see module docstring).

    `input_shape` is (C, H, W) without the batch; defaults to `model.input_shape` if set.
    New layers (thermometer first layer, re-sized classifier) are freshly initialised from the
    global RNG (build_model seeds it). Returns the model, with `model.refactor_options` set.
    """
    opts = RefactorOptions.from_any(options)
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise CimnasError("refactor needs input_shape=(C, H, W) for a model without .input_shape")
    input_shape = tuple(int(s) for s in input_shape)
    order = execution_order(model, input_shape)
    if not _q_layers(order):
        raise CimnasError(f"{type(model).__name__} has no QConv2d/QLinear layers to binarize")

    modify_topology(model, input_shape, opts)
    q = _q_layers(execution_order(model, input_shape))
    for i, (_, layer) in enumerate(q):
        binary = (opts.binarize_first or i > 0) and (opts.binarize_last or i < len(q) - 1)
        if not binary:
            layer.weight_quantizer, layer.input_quantizer = Identity(), Identity()
            continue
        layer.weight_quantizer = BinaryWeight()
        if not isinstance(layer.input_quantizer, ThermometerInput):
            layer.input_quantizer = BinaryActivation()
    model.refactor_options = asdict(opts)
    return model


def quantize_kbit(model: nn.Module, bits: int = 8) -> nn.Module:
    """k-bit DoReFa weights and activations on every QConv2d / QLinear (the Quan-8bit baseline)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise CimnasError(f"bits must be an integer in 1..16 for precision 'kbit', got {bits!r}")
    for m in model.modules():
        if isinstance(m, QConv2d | QLinear):
            m.weight_quantizer = DoReFaWeight(bits)
            m.input_quantizer = DoReFaActivation(bits)
    return model


__all__ = ["RefactorOptions", "ThermometerInput", "execution_order", "modify_topology", "quantize_kbit",
           "rebuild_linear_inputs", "refactor"]
