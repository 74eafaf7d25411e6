"""Lower a trained binarized model to the export program: integer ops and crossbar images.

The program is a list of ops over named integer tensors (docs/export-format.md has the schema):

    encode        input pixel codes -> {0,1} planes (thermometer / [x > 1/2])     (N, C', H, W) or (N, F')
    crossbar      bits -> Z, a conv / FC on crossbar arrays (unrolled rows (c, i, j), MNSIM packing)
    compare       Z -> bits: [Z >= theta] (mode +1), [Z <= theta] (mode -1), const (mode 0)
    requant       Z -> stream term sat_B(floor((M Z + N) / 2^R))                  (cimnas.deploy.fixed_point)
    add           sat_B(term + shortcut(stream)); option A: subsample by stride, zero-pad / truncate channels
    stream_code   stream -> bits: [X_c >= theta_c]
    logits        Z -> Z 2^P + bias (prediction = argmax)

Every number comes from the fused reference (`fixed_residual_model`), so export and reference agree by
construction of the values and differ only in how they are executed (that is what the tests compare). Weight
codes are mapped by `cimnas.hardware.mapping.map_layer` and stored as integer cell levels per physical array.
"""

from __future__ import annotations

import copy
import math
import operator

import numpy as np
import torch
from torch import fx, nn

from cimnas.deploy.fixed_point import (
    LOGIT_SHIFT,
    MULT_SHIFT,
    FixedAffine,
    IntegerLogits,
    Saturate,
    StreamCode,
    fixed_residual_model,
    integer_kind,
)
from cimnas.errors import CimnasError, check
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.mapping import map_layer
from cimnas.nn.fusion import ThresholdComparator, _IntegerLayer
from cimnas.nn.layers import QConv2d, QLinear, match_channels
from cimnas.nn.quantizers import BinaryActivation, DoReFaActivation
from cimnas.nn.refactor import ThermometerInput, execution_order


def _pair(v) -> int:
    v = v if isinstance(v, tuple | list) else (v, v)
    check(v[0] == v[1], f"non-square kernel / stride / padding {tuple(v)} is not supported by the export")
    return int(v[0])


def rows_per_tile(kind: str, kernel: int, spec: CrossbarSpec) -> int:
    """Word lines one array uses: whole k x k kernels for a conv (the dataflow's packing), all rows for an FC."""
    if kind == "conv":
        check(kernel * kernel <= spec.rows, f"a {kernel}x{kernel} kernel does not fit {spec.rows} crossbar rows")
        return spec.channels_per_tile(kernel) * kernel * kernel
    return spec.rows


def crossbar_images(levels: torch.Tensor, kind: str, kernel: int, spec: CrossbarSpec) -> np.ndarray:
    """(S, C_out, R) cell levels -> (row tiles, column tiles, S, rows, columns) physical arrays, unused cells 0."""
    s, c_out, r = levels.shape
    rpt = rows_per_tile(kind, kernel, spec)
    tr, tc = math.ceil(r / rpt), math.ceil(c_out / spec.columns)
    out = np.zeros((tr, tc, s, spec.rows, spec.columns), dtype=np.uint8)
    lv = levels.permute(0, 2, 1).numpy()  # (S, R, C_out): rows are inputs, columns outputs
    for i in range(tr):
        for j in range(tc):
            block = lv[:, i * rpt:(i + 1) * rpt, j * spec.columns:(j + 1) * spec.columns]
            out[i, j, :, : block.shape[1], : block.shape[2]] = block
    return out


class _Builder:
    """Collects ops and arrays; `shapes` traces every Q layer's input / output shape."""

    def __init__(self, model: nn.Module, fixed: nn.Module, spec: CrossbarSpec):
        self.model, self.fixed, self.spec = model, fixed, spec
        self.ops: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.shapes = _trace_shapes(model)
        self.adds: set[fx.Node] = set()  # the residual adds of the traced graph

    def op(self, op: str, name: str, inputs: list[str], **fields) -> str:
        self.ops.append({"op": op, "name": name, "inputs": inputs, **fields})
        return name

    def array(self, name: str, value) -> str:
        self.arrays[name] = np.ascontiguousarray(value.detach().cpu().numpy() if torch.is_tensor(value) else value)
        return name

    def encode(self, first: str) -> str:
        layer = self.model.get_submodule(first)
        q = layer.input_quantizer
        in_shape = self.shapes[first][0]
        layout = "conv" if isinstance(layer, QConv2d) else "flat"
        if isinstance(q, ThermometerInput):
            return self.op("encode", "input", [], kind="thermometer", levels=q.levels, layout=layout,
                           out_shape=list(in_shape))
        if isinstance(q, DoReFaActivation):  # k-bit codes round(clip(x, 0, 1) (2^k - 1))
            return self.op("encode", "input", [], kind="dorefa", levels=2**q.bits - 1, layout=layout,
                           out_shape=list(in_shape))
        check(isinstance(q, BinaryActivation), f"layer {first}: unknown input coding {type(q).__name__}")
        return self.op("encode", "input", [], kind="binary", levels=1, layout=layout, out_shape=list(in_shape))

    def crossbar(self, name: str, src: str) -> str:
        layer = self.model.get_submodule(name)
        ml = map_layer(name, layer, self.spec)
        dg = self.spec.g_max_s - self.spec.g_min_s
        lv = lambda g: torch.round((g.double() - self.spec.g_min_s) / dg * self.spec.cell_levels).to(torch.uint8)  # noqa: E731
        kind = "conv" if isinstance(layer, QConv2d) else "fc"
        k = _pair(layer.kernel_size) if kind == "conv" else 1
        pos = self.array(f"{name}.g_pos", crossbar_images(lv(ml.g_pos), kind, k, self.spec))
        neg = self.array(f"{name}.g_neg", crossbar_images(lv(ml.g_neg), kind, k, self.spec))
        in_shape, out_shape = self.shapes[name]
        geo = {"kernel": k, "stride": _pair(layer.stride), "padding": _pair(layer.padding)} if kind == "conv" else {}
        return self.op("crossbar", f"{name}.z", [src], layer=name, kind=kind, in_shape=list(in_shape),
                       out_shape=list(out_shape), weight_bits=ml.weight_bits, slices=ml.slices,
                       rows=ml.rows, rows_per_tile=rows_per_tile(kind, k, self.spec), arrays=[pos, neg], **geo)

    def compare(self, name: str, src: str) -> str:
        m = self.fixed.get_submodule(name)
        check(isinstance(m, ThresholdComparator), f"{name} is not a comparator after fusion")
        arrs = [self.array(f"{name}.{k}", getattr(m, k).long() if k == "theta" else getattr(m, k).to(torch.int8))
                for k in ("theta", "mode", "const")]
        return self.op("compare", f"{name}.bits", [src], channels=int(m.theta.numel()), arrays=arrs)

    def requant(self, name: str, src: str, bits: int) -> str:
        m = self.fixed.get_submodule(name)
        assert isinstance(m, FixedAffine)
        arrs = [self.array(f"{name}.{k}", getattr(m, k)) for k in ("mult", "offset", "exponent")]
        return self.op("requant", f"{name}.term", [src], channels=int(m.mult.numel()), shift=MULT_SHIFT,
                       bits=bits, arrays=arrs)

    def stream_code(self, reader: str, src: str, channels: int) -> str:
        layer = self.fixed.get_submodule(reader)
        code = (layer.layer if isinstance(layer, IntegerLogits) else layer).input_code
        assert isinstance(code, StreamCode)
        theta = code.theta
        theta = theta[:: theta.numel() // channels]  # the classifier's copy is repeated per position
        arr = self.array(f"{reader}.theta_in", theta.long())
        return self.op("stream_code", f"{reader}.in", [src], channels=channels, arrays=[arr])

    def logits(self, name: str, src: str) -> str:
        m = self.fixed.get_submodule(name)
        assert isinstance(m, IntegerLogits)
        arr = self.array("logits.bias_int", m.bias_int)
        return self.op("logits", "logits", [src], classes=int(m.bias_int.numel()), shift=LOGIT_SHIFT, arrays=[arr])


@torch.no_grad()
def _trace_shapes(model: nn.Module) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) without the batch of every QConv2d / QLinear, input before its quantizer's
    thermometer widening (the encoder's output is the quantizer's output)."""
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, QConv2d | QLinear):
            def hook(mod, inp, out, name=name):
                shapes[name] = (tuple(mod.input_quantizer(inp[0]).shape[1:]), tuple(out.shape[1:]))
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        model(torch.zeros((1, *model.input_shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return shapes


def _through(node: fx.Node, fixed: nn.Module) -> tuple[fx.Node, int]:
    """(the stream node an add operand or a reader's input comes from, its option-A stride): follows
    x[:, :, ::s, ::s], match_channels, flatten, nn.Identity and Saturate (the add op subsamples, pads and
    saturates itself; the crossbar op flattens)."""
    stride = 1
    while True:
        if node.op == "call_function" and node.target is operator.getitem:
            steps = {sl.step or 1 for sl in node.args[1][2:]}
            check(len(steps) == 1, f"graph node {node.name!r}: the export subsamples both spatial dims alike")
            stride *= steps.pop()
        elif not (node.target in (match_channels, torch.flatten, "flatten") or (
                node.op == "call_module" and isinstance(fixed.get_submodule(node.target),
                                                        nn.Identity | Saturate | nn.Flatten))):
            return node, stride
        node = node.args[0]


def _lower_graph(b: _Builder, fixed: fx.GraphModule, bits: int) -> None:
    """The ops of a residual model, node by node of its traced graph (`cimnas.deploy.streams`): crossbar layers,
    comparators, stream terms (requant), adds (a term + a shortcut: the stream, subsampled / padded, or a 1x1
    conv + BN term), stream codes before each stream reader, integer logits."""
    names: dict[fx.Node, str] = {}
    codes: dict[str, str] = {}  # stream tensor -> its {0,1} code (one stream_code op per stream)
    for node in fixed.graph.nodes:
        src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_module":
            mod = fixed.get_submodule(node.target)
            layer = mod.layer if isinstance(mod, IntegerLogits) else mod
            if isinstance(layer, _IntegerLayer):
                if src.op == "placeholder":
                    bits_in = b.encode(node.target)
                elif isinstance(layer.input_code, StreamCode):
                    base, stride = _through(src, fixed)
                    check(stride == 1, f"layer {node.target} reads a subsampled stream; the export does not")
                    if names[base] not in codes:
                        codes[names[base]] = b.stream_code(node.target, names[base], _stream_width(base))
                    bits_in = codes[names[base]]
                else:
                    bits_in = names[src]
                z = b.crossbar(node.target, bits_in)
                names[node] = b.logits(node.target, z) if isinstance(mod, IntegerLogits) else z
            elif isinstance(mod, ThresholdComparator):
                names[node] = b.compare(node.target, names[src])
            elif isinstance(mod, FixedAffine):
                names[node] = b.requant(node.target, names[src], bits)
            elif isinstance(mod, nn.Identity | Saturate | nn.Flatten):
                names[node] = names[src]
            else:
                raise CimnasError(f"the export does not know module {node.target!r} ({type(mod).__name__})")
        elif node.op in ("call_function", "call_method"):
            if node in b.adds:  # the add op subsamples / pads its second operand: put the shortcut second
                (term, s_term), (short, stride) = sorted((_through(a, fixed) for a in node.args[:2]),
                                                         key=lambda t: t[1] > 1)
                check(s_term == 1 and _stream_width(term) == _stream_width(node), f"graph node {node.name!r}: the "
                      "export takes an add of a term and a shortcut; here both operands are subsampled or padded")
                names[node] = b.op("add", f"{node.name}.out", [names[term], names[short]], stride=stride, bits=bits)
            elif node.target in (torch.flatten, "flatten") and src in names:
                names[node] = names[src]
        elif node.op == "output":
            check(names.get(node.args[0]) == "logits", "the model's output is not its classifier's logits")


def _stream_width(node: fx.Node) -> int:
    """Channels of a stream tensor (the traced shape before any flatten)."""
    return int(node.meta["tensor_meta"].shape[1])


def _lower_chain(b: _Builder, model: nn.Module) -> None:
    order = execution_order(model, tuple(model.input_shape))
    q = [i for i, (_, m) in enumerate(order) if isinstance(m, QConv2d | QLinear)]
    t = b.encode(order[q[0]][0])
    for n, i in enumerate(q):
        name = order[i][0]
        t = b.crossbar(name, t)
        if n == len(q) - 1:
            b.logits(name, t)
        else:
            check(i + 1 < len(order), f"nothing follows layer {name}")
            t = b.compare(order[i + 1][0], t)


@torch.no_grad()
def verify_export(model: nn.Module, doc: dict, arrays: dict, spec: CrossbarSpec, samples: int = 8,
                  seed: int = 0) -> None:
    """Self-check before writing: `samples` random images (pixel codes 0..255) through the integer simulator must
    give the reference's predictions (`fixed_residual_model`, or the k-bit model itself in float64); a model
    whose structure the lowering does not capture (an add it did not see) is refused instead of exported."""
    from cimnas.deploy.simulate import Chip, predict

    g = torch.Generator().manual_seed(seed)
    pix = torch.randint(0, 256, (samples, *model.input_shape), generator=g)
    x = pix.double() / 255
    if doc["kind"] == "kbit":
        ref = copy.deepcopy(model).double().eval()(x).argmax(1)
    else:
        ref = fixed_residual_model(model, doc["residual_bits"], doc["range_sigmas"])[0](x.float()).argmax(1)
    got = predict(Chip(doc, arrays, spec), pix.numpy(), 255)
    check(bool((torch.from_numpy(got) == ref).all()), f"the lowered {type(model).__name__} does not reproduce the "
          "model on random inputs (a structure the export does not know, e.g. a residual add in a k-bit model); "
          "the export covers residual models the trace follows (deploy.streams), LeNet-5, the MLP and chains of "
          "conv / FC layers")


def lower(model: nn.Module, bits: int, spec: CrossbarSpec, sigmas: float | None) -> tuple[list[dict], dict]:
    """(ops, arrays) of a fully binarized model with B-bit residual streams, or of a k-bit chain
    (`cimnas.deploy.kbit`; `bits` and `sigmas` then do not apply) (module docstring)."""
    spec.validate()
    check(getattr(model, "input_shape", None) is not None, "the model has no input_shape; load it with load_model")
    if integer_kind(model) == "kbit":
        from cimnas.deploy.kbit import lower_kbit

        b = _Builder(model.eval(), model, spec)
        lower_kbit(b, model)
        return b.ops, b.arrays
    fixed, plan = fixed_residual_model(model, bits, sigmas)
    b = _Builder(model.eval(), fixed, spec)
    if "graph" in plan:
        b.adds = set(plan["graph"].adds)
        _lower_graph(b, fixed, bits)
    else:
        _lower_chain(b, model)
    if not b.ops:
        raise CimnasError("nothing to export")
    return b.ops, b.arrays
