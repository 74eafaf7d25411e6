"""`cimnas.convert(model, rules)`: any PyTorch model's `nn.Conv2d` / `nn.Linear` -> crossbar layers, in place.

In the spirit of IBM aihwkit's `convert_to_analog` and larq's quantized layers (STYLE.md): `CONVERSIONS` maps
each digital layer class to its crossbar class, whose `from_digital(layer, rule)` constructor takes the trained
Parameters over (shared, not copied: an optimiser built before the conversion still updates them). The walker
replaces children in place; BN, pooling, activations, residual adds, concatenations and the model's own control
flow stay as they are.

Precision per layer (`Rule`):

- `binary`:  W_b = sign(W) E|W|, inputs round(clip(x, 0, 1)) (HAWIS Sec. II-A binarization);
- `kbit[:k]`: k-bit DoReFa weights and activations (Zhou et al. 2016; `kbit` = 8 bits, the Quan-8bit baseline);
- `float`:   a crossbar layer with float weights (identity quantizers; charged at the spec's float_weight_bits,
             the zoo's `precision="float"`; UAE's weight-noise analysis works on it);
- `digital`: left as the plain PyTorch layer, charged to no crossbar, listed as digital in every report.

Rules pick the precision by layer *name* (`named_modules` names): an ordered mapping pattern -> precision, the
first matching pattern wins, layers no pattern matches take `default`. A pattern is an fnmatch glob
(`features.*`, `*.downsample.0`), `re:` + a regular expression (full match), or one of the words `first` /
`last`: the first / last convertible layer in execution order (traced with `input_shape`, else definition
order). A `digital` rule on a module that is not a conv / FC layer (an attention block, a custom module) keeps
its whole subtree digital. The resolved per-layer precisions (`Conversion.layers`) are the recipe stored in
checkpoints: a model is rebuilt by running its factory and converting it with exactly those names, never by
position.

Layers the crossbar model cannot map (transposed, 1-D or 3-D convolutions, attention, recurrent cells, a
Conv2d/Linear subclass with its own forward) are errors naming the layer, unless a rule keeps them `digital`;
`check_mappable` also finds matmuls between activations and functional convolutions / linears during a traced
forward pass (`torch.overrides.TorchFunctionMode`), which no module walk can see.
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.forward_scan import probe_forward, scan_forward
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight, DoReFaActivation, DoReFaWeight, Identity, Quantizer
from cimnas.nn.refactor import RefactorOptions, _inside, modify_topology

#: digital layer class -> crossbar layer class (exact classes: a subclass may change forward, see UNMAPPABLE)
CONVERSIONS: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QConv2d, nn.Linear: QLinear}
PRECISIONS = ("binary", "kbit", "float", "digital")
WORDS = ("first", "last")
#: modules with weights the crossbar model cannot map (a rule may keep them digital)
UNMAPPABLE = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear,
              nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)


@dataclass(frozen=True)
class Rule:
    """The precision of one layer: `binary`, `kbit` (with `bits`), `float` or `digital`."""

    precision: str = "binary"
    bits: int = 8  # kbit only: weight and activation bits (DoReFa)

    @classmethod
    def parse(cls, spec: Any) -> Rule:
        """A Rule from 'binary' | 'kbit' | 'kbit:4' | 'float' | 'digital' | {'precision': ..., 'bits': ...}."""
        if isinstance(spec, Rule):
            return spec
        if isinstance(spec, Mapping):
            extra = sorted(set(spec) - {"precision", "bits"})
            if extra:
                raise CimnasError(f"unknown rule key(s) {extra}; a rule has 'precision' and 'bits'")
            spec = f"{spec.get('precision', 'binary')}:{spec['bits']}" if "bits" in spec else spec.get("precision")
        if not isinstance(spec, str):
            raise CimnasError(f"a precision rule is a string like 'binary', 'kbit:4' or 'digital', got {spec!r}")
        name, _, bits = spec.strip().partition(":")
        if name not in PRECISIONS:
            raise CimnasError(f"unknown precision {spec!r}; choose one of: binary, kbit, kbit:BITS, float, digital")
        if bits and name != "kbit":
            raise CimnasError(f"precision {spec!r}: only kbit takes a bit count (kbit:4)")
        try:
            k = int(bits) if bits else 8
        except ValueError:
            raise CimnasError(f"precision {spec!r}: the bit count must be an integer (kbit:4)") from None
        if not 1 <= k <= 16:
            raise CimnasError(f"precision {spec!r}: bits must be in 1..16")
        return cls(name, k if name == "kbit" else 8)

    def __str__(self) -> str:
        return f"kbit:{self.bits}" if self.precision == "kbit" else self.precision

    @property
    def on_crossbar(self) -> bool:
        return self.precision != "digital"

    def quantizers(self) -> tuple[Quantizer, Quantizer]:
        """(input quantizer, weight quantizer) of the crossbar layer."""
        if self.precision == "binary":
            return BinaryActivation(), BinaryWeight()
        if self.precision == "kbit":
            return DoReFaActivation(self.bits), DoReFaWeight(self.bits)
        return Identity(), Identity()


@dataclass
class Conversion:
    """What `convert` did: the recipe (`layers`: name -> precision of every conv / FC) and the report."""

    default: str
    rules: dict[str, str]
    layers: dict[str, str] = field(default_factory=dict)  # every convertible layer -> its precision
    digital: list[str] = field(default_factory=list)  # modules kept digital by rule (incl. unmappable ones)
    refactor: dict | None = None  # the HAWIS topology modification applied after the conversion (RefactorOptions)

    @property
    def converted(self) -> list[str]:
        return [n for n, p in self.layers.items() if p != "digital"]

    def to_dict(self) -> dict:
        d = {"default": self.default, "rules": dict(self.rules), "layers": dict(self.layers),
             "digital": list(self.digital)}
        return d if self.refactor is None else {**d, "refactor": dict(self.refactor)}

    @classmethod
    def from_dict(cls, d: Any) -> Conversion:
        if not isinstance(d, dict) or not isinstance(d.get("layers"), dict):
            raise CimnasError("the conversion recipe must be a dict with a 'layers' mapping; the checkpoint is corrupt")
        ref = d.get("refactor")
        return cls(str(d.get("default", "binary")), dict(d.get("rules") or {}), dict(d["layers"]),
                   list(d.get("digital") or []), None if ref is None else asdict(RefactorOptions.from_any(ref)))

    def summary(self) -> str:
        """One line: how many layers at which precision, which stay digital."""
        counts: dict[str, int] = {}
        for p in self.layers.values():
            counts[p] = counts.get(p, 0) + 1
        parts = ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
        dig = f"; digital: {', '.join(map(repr, self.digital))}" if self.digital else ""
        return f"{len(self.converted)} of {len(self.layers)} conv/FC layers on crossbars ({parts}){dig}"


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _check_pattern(pattern: str) -> None:
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as e:
            raise CimnasError(f"rule pattern {pattern!r} is not a valid regular expression ({e})") from None


def _convertible(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every plain Conv2d / Linear and crossbar layer, in definition order."""
    return [(n, m) for n, m in model.named_modules()
            if n and (type(m) in CONVERSIONS or isinstance(m, QConv2d | QLinear))]


def _execution_order(model: nn.Module, names: list[str], input_shape: tuple[int, ...]) -> list[str]:
    """`names` in the order a forward pass on zeros first runs them (never-run layers last, in definition order)."""
    wanted = {model.get_submodule(n): n for n in names}
    seen: list[str] = []

    def hook(mod, _inp, _out):
        if wanted[mod] not in seen:
            seen.append(wanted[mod])

    hooks = [m.register_forward_hook(hook) for m in wanted]
    try:
        probe_forward(model, input_shape)
    finally:
        for h in hooks:
            h.remove()
    return seen + [n for n in names if n not in seen]


def resolve_rules(model: nn.Module, rules: Mapping[str, Any] | None, default: Any = "binary",
                  input_shape: tuple[int, ...] | None = None) -> Conversion:
    """The per-layer recipe of `rules` on `model` (nothing is changed). See the module docstring."""
    rules = dict(rules or {})
    parsed = {str(p): Rule.parse(r) for p, r in rules.items()}
    for p in parsed:
        _check_pattern(p)
    default_rule = Rule.parse(default)
    layers = _convertible(model)
    names = [n for n, _ in layers]
    words = {}
    if any(p in WORDS for p in parsed) and names:
        order = _execution_order(model, names, tuple(input_shape)) if input_shape is not None else names
        words = {"first": order[0], "last": order[-1]}
    all_names = [n for n, _ in model.named_modules() if n]
    for p in parsed:
        if p not in WORDS and not any(_matches(p, n) for n in all_names):
            raise CimnasError(f"rule pattern {p!r} matches no layer of the model; layer names look like "
                              f"{', '.join(names[:3]) or '(none)'} (see `model.named_modules()`)")
    conv = Conversion(str(default_rule), {p: str(r) for p, r in parsed.items()})

    def rule_of(name: str) -> Rule | None:
        for p, r in parsed.items():
            if (p in WORDS and words.get(p) == name) or (p not in WORDS and _matches(p, name)):
                return r
        return None

    # a digital rule on any module keeps its whole subtree digital (attention blocks, custom modules)
    roots = [n for n in all_names if n not in conv.layers and (r := rule_of(n)) is not None and not r.on_crossbar]
    for n, _ in layers:
        conv.layers[n] = "digital" if _inside(n, roots) else str(rule_of(n) or default_rule)
    conv.digital = sorted(set(roots) | {n for n, p in conv.layers.items() if p == "digital"}, key=all_names.index)
    return conv


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def check_modules(model: nn.Module, digital: list[str] | None = None) -> None:
    """Refuse (one line naming the layer) a module the crossbar model cannot map and no rule keeps digital."""
    digital = list(digital or [])
    for n, m in model.named_modules():
        if not n or _inside(n, digital):
            continue
        subclass = isinstance(m, nn.Conv2d | nn.Linear) and type(m) not in CONVERSIONS \
            and not isinstance(m, QConv2d | QLinear)
        if isinstance(m, UNMAPPABLE) or subclass:
            what = f"a {type(m).__name__} (a subclass of {'Conv2d' if isinstance(m, nn.Conv2d) else 'Linear'} with " \
                   "its own forward)" if subclass and not isinstance(m, UNMAPPABLE) else f"a {type(m).__name__}"
            raise CimnasError(f"layer {n!r} is {what}, which cimnas cannot map onto crossbars; keep it digital "
                              f"with the rule {{{n!r}: 'digital'}} (charged to no crossbar) or replace it")


def convert(model: nn.Module, rules: Mapping[str, Any] | None = None, *, default: Any = "binary",
            input_shape: tuple[int, ...] | None = None, refactor: bool | dict | RefactorOptions | None = None
            ) -> Conversion:
    """Replace every plain `nn.Conv2d` / `nn.Linear` of `model` in place by its crossbar layer (module docstring).

    `rules`: ordered {pattern: precision}; `default`: the precision of layers no rule names; `input_shape`
    (C, H, W): resolves the words first / last in execution order and checks the model runs on it (functional
    matmuls and convolutions are checked there too, `check_mappable`). `refactor` (True or RefactorOptions
    fields): then apply HAWIS's topology modification (`refactor_converted`). Returns the `Conversion` (also kept
    as `model.cimnas_conversion`, which the hardware model and `model_payload` read).
    """
    if not isinstance(model, nn.Module):
        raise CimnasError(f"convert needs a torch.nn.Module, got {type(model).__name__}")
    conv = resolve_rules(model, rules, default, input_shape)
    check_modules(model, conv.digital)
    if not conv.layers:
        raise CimnasError(f"{type(model).__name__} has no nn.Conv2d / nn.Linear layer: nothing to put on crossbars")
    if not conv.converted:
        raise CimnasError(f"every conv / FC layer of {type(model).__name__} is kept digital by the rules: nothing "
                          "would sit on a crossbar; convert at least one layer")
    for name, precision in conv.layers.items():
        m = model.get_submodule(name)
        rule = Rule.parse(precision)
        if isinstance(m, QConv2d | QLinear):  # already a crossbar layer: set its precision
            if rule.on_crossbar:
                m.input_quantizer, m.weight_quantizer = (q.to(m.weight.device) for q in rule.quantizers())
            else:
                raise CimnasError(f"layer {name!r} is already a crossbar layer; it cannot be made digital again")
        elif rule.on_crossbar:
            _replace(model, name, CONVERSIONS[type(m)].from_digital(m, rule))
    prior = getattr(model, "cimnas_conversion", None)
    if isinstance(prior, Conversion):  # a second convert() refines the first: keep the layers it converted
        conv.layers = {**{n: p for n, p in prior.layers.items() if p != "digital"}, **conv.layers}
        conv.refactor = prior.refactor
    model.cimnas_conversion = conv
    if refactor is not None and refactor is not False:
        if input_shape is None:
            raise CimnasError("convert(refactor=...) needs input_shape=(C, H, W): the re-factorization is traced")
        conv.refactor = refactor_converted(model, conv, None if refactor is True else refactor, input_shape)
    if input_shape is not None:
        check_mappable(model, input_shape)
    return conv


_ACTIVATION_FUNCS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6,
                     F.hardtanh, F.hardtanh_, F.leaky_relu, F.gelu, F.silu, F.sigmoid, F.tanh, torch.sigmoid,
                     torch.tanh, torch.Tensor.sigmoid, torch.Tensor.tanh}


def refactor_converted(model: nn.Module, conv: Conversion, options: dict | RefactorOptions | None,
                       input_shape: tuple[int, ...]) -> dict:
    """HAWIS's re-factorization (Sec. III-A-1, `cimnas.nn.refactor.modify_topology`) on a converted model, in
    place, outside the subtrees its rules keep digital: activation modules -> Identity (a ReLU before a binarized
    layer makes every input >= 0, so round(clip(x, 0, 1)) sees no sign: BN -> binarizer is the non-linearity),
    max-pools folded into the conv stride before them, the avg-pool before the classifier removed (topology_mod;
    the classifier re-sized to C*H*W inputs, freshly initialised), optionally a thermometer-coded first layer.
    The precision of every layer stays what the rules gave it. An activation computed by a function call
    (torch.relu / F.relu ...) cannot be removed: a one-line error names its module. Returns the options applied."""
    opts = RefactorOptions.from_any(options)
    if not (opts.binarize_first and opts.binarize_last):
        raise CimnasError("refactor: binarize_first / binarize_last do not apply to a converted model; the rules "
                          "decide each layer's precision (e.g. {'first': 'digital'})")
    if opts.thermometer:
        first = _execution_order(model, list(conv.layers), tuple(input_shape))[0]
        if conv.layers[first] != "binary":
            raise CimnasError(f"refactor.thermometer feeds the first layer a binary code, but {first!r} is "
                              f"{conv.layers[first]}; make it binary or drop thermometer")
    modify_topology(model, tuple(input_shape), opts, keep=tuple(conv.digital))
    for where, op in scan_forward(model, input_shape, _ACTIVATION_FUNCS):
        if not _inside(where, conv.digital):
            whom = f"module {where!r}" if where else "the model's own forward"
            raise CimnasError(f"refactor: {whom} applies {op} as a function call, which the re-factorization cannot "
                              "remove (only activation modules, nn.ReLU ...); write it as a module or keep the module "
                              "digital")
    return asdict(opts)


#: model -> input shapes whose forward pass `check_mappable` scanned and found clean (the module walk, which
#: catches layers added later, runs on every call; the forward scan once per shape)
_SCANNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_converted(model: nn.Module) -> list[str]:
    """The module walk of `check_mappable` (no forward pass): refuse a plain nn.Conv2d / nn.Linear that no
    conversion keeps digital, an unmappable module, or a model with nothing on a crossbar. Returns the digital
    module names."""
    conv = conversion_of(model)
    digital = list(conv.digital) if conv is not None else []
    check_modules(model, digital)
    for n, m in model.named_modules():
        if type(m) in CONVERSIONS and not _inside(n, digital):
            raise CimnasError(f"layer {n!r} is a plain {type(m).__name__} that is not on a crossbar: convert the model "
                              "first (cimnas.convert(model), or --model-file / --model on the command line), or keep "
                              f"it digital with the rule {{{n!r}: 'digital'}}")
    if not any(isinstance(m, QConv2d | QLinear) for m in model.modules()):
        raise CimnasError(f"{type(model).__name__} has no layer on a crossbar (no QConv2d / QLinear): convert it "
                          "first (cimnas.convert); an empty estimate would read 0 uJ")
    return digital


def check_mappable(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Refuse, in one line naming the module, what the crossbar model would silently skip; returns the names of
    the modules kept digital (plain Conv2d / Linear left by `convert`'s rules, unmappable ones a rule allows).

    - a plain nn.Conv2d / nn.Linear that no conversion keeps digital (the model was not converted);
    - an unmappable module (`UNMAPPABLE`, a Conv2d / Linear subclass) that no rule keeps digital;
    - in one traced forward pass: a matmul (between activations, or with a weight outside an nn.Linear),
      a 1-D / 3-D / transposed convolution, or a functional conv2d / linear outside a Conv2d / Linear module.
    Nothing convertible on a crossbar at all is an error too (never a silent 0 uJ).
    """
    digital = check_converted(model)
    key = tuple(int(v) for v in input_shape)
    if key in _SCANNED.get(model, ()):  # the forward pass was scanned already (convert, then estimate)
        return digital
    for where, op in scan_forward(model, input_shape):
        if not _inside(where, digital):
            whom = f"module {where!r}" if where else "the model's own forward"
            raise CimnasError(f"{whom} computes a {op} outside any Conv2d / Linear layer (e.g. attention or a "
                              "functional layer), which cimnas cannot map onto crossbars; keep it digital with the "
                              f"rule {{{where or '*'!r}: 'digital'}} or rewrite it as nn.Conv2d / nn.Linear")
    _SCANNED.setdefault(model, set()).add(key)
    return digital


def conversion_of(model: nn.Module) -> Conversion | None:
    """The `Conversion` a model carries (None for models built as crossbar models, e.g. the zoo)."""
    conv = getattr(model, "cimnas_conversion", None)
    return conv if isinstance(conv, Conversion) else None


def apply_recipe(model: nn.Module, recipe: Any, input_shape: tuple[int, ...] | None = None) -> Conversion:
    """Convert `model` exactly as a stored recipe says (`Conversion.to_dict()`): layer by name, no position."""
    stored = Conversion.from_dict(recipe)
    have = {n for n, _ in _convertible(model)}
    missing = sorted(set(stored.layers) - have)
    if missing:
        raise CimnasError(f"the model has no conv / FC layer named {missing[0]!r} that the checkpoint's conversion "
                          "names; rebuild it with the same factory the checkpoint was trained with")
    rules = {n: p for n, p in stored.layers.items()}
    rules.update({n: "digital" for n in stored.digital if n not in rules})
    conv = convert(model, rules, default=stored.default, input_shape=input_shape, refactor=stored.refactor)
    conv.rules, conv.default = stored.rules, stored.default
    return conv


__all__ = ["CONVERSIONS", "PRECISIONS", "UNMAPPABLE", "Conversion", "Rule", "apply_recipe", "check_converted",
           "check_mappable", "check_modules", "conversion_of", "convert", "refactor_converted", "resolve_rules"]
