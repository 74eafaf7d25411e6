"""The residual streams of a fused binarized network, read from its traced graph (torch.fx).

`fuse_model` leaves an `IntegerAffine` map wherever a BN's output reaches something other than one binarizer:
those are the residual *terms*. Tracing the fused model with torch.fx (crossbar layers and the fused modules are
leaves) gives every operation between them, and each value is classified:

    term        the output of an IntegerAffine (a BN that feeds an add)                     a new stream
    add         a + b with both operands streams (operator.add, +=, torch.add)              joins their streams
    pass        nn.Identity (a removed ReLU), option-A subsampling x[:, :, ::s, ::s],
                `match_channels` (zero-pad / truncate), flatten before the classifier       the same stream
    reader      a crossbar layer whose input is a stream                                    binarizes it

A *segment* is a set of terms joined by adds (union-find): they share one exponent per channel. Anything else
reading a stream (an average pool, a float op, the model's output) is a one-line error naming the node: the
integer path would otherwise compute something the model does not. The zoo's CIFAR ResNets and a converted
outside ResNet go through the same trace; nothing here knows a model's attribute names.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from cimnas.errors import CimnasError
from cimnas.nn.fusion import IntegerAffine, _IntegerLayer
from cimnas.nn.layers import QConv2d, QLinear, match_channels

ADDS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}
FLATTENS = {torch.flatten}


class _Tracer(fx.Tracer):
    """Crossbar layers, fused layers and modules without children are leaves; containers are traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, _IntegerLayer | QConv2d | QLinear):
            return True
        return not isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict) and not list(m.children())


@dataclass
class Stream:
    """A stream value: its term `root` (union-find), channels, positions per channel (flattened: H*W)."""

    root: int
    channels: int
    positions: int = 1
    flat: bool = False


@dataclass
class StreamGraph:
    """What `trace_streams` finds: the graph, the terms per segment (execution order), the readers (their stream)
    and the add nodes."""

    graph: fx.Graph
    segments: list[list[str]] = field(default_factory=list)
    readers: dict[str, Stream] = field(default_factory=dict)
    reader_segment: dict[str, int] = field(default_factory=dict)
    adds: list[fx.Node] = field(default_factory=list)
    node_of: dict[str, fx.Node] = field(default_factory=dict)  # term / reader module name -> its node


def trace_graph(fused: nn.Module) -> fx.Graph:
    """The fx graph of a fused model, or a one-line error naming why it cannot be traced."""
    try:
        return _Tracer(autowrap_functions=(match_channels,)).trace(fused)
    except CimnasError:
        raise
    except Exception as e:  # torch.fx: data-dependent control flow and the like, any exception type
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CimnasError(f"the integer residual path traces the model with torch.fx, which cannot trace "
                          f"{type(fused).__name__} ({type(e).__name__}: {msg}); write its forward without "
                          "data-dependent control flow") from None


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _streams_in(args, info: dict[fx.Node, Stream]) -> list[Stream]:
    flat = torch.utils._pytree.tree_flatten(args)[0]
    return [info[a] for a in flat if isinstance(a, fx.Node) and a in info]


def _subsample_only(idx) -> bool:
    """x[:, :, ::s, ::s]: full slices on batch and channels, step slices on the spatial dims."""
    if not isinstance(idx, tuple) or len(idx) < 2:
        return False
    full = [i == slice(None) for i in idx[:2]]
    return all(full) and all(isinstance(i, slice) and i.start is None and i.stop is None for i in idx[2:])


def trace_streams(fused: nn.Module, input_shape: tuple[int, ...]) -> StreamGraph:
    """Classify every value of the fused model's graph (module docstring); errors name the node that reads a
    stream in a way the integer path does not know."""
    graph = trace_graph(fused)
    gm = fx.GraphModule(fused, graph)
    p = next(fused.buffers(), None)
    ShapeProp(gm).propagate(torch.zeros((1, *input_shape), dtype=torch.float32,
                                        device=p.device if p is not None else "cpu"))
    info: dict[fx.Node, Stream] = {}
    parent: list[int] = []
    terms: list[str] = []
    out = StreamGraph(graph)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def refuse(node: fx.Node, what: str) -> None:
        raise CimnasError(f"the residual stream reaches {what} (graph node {node.name!r}), which the integer path "
                          "does not support: it knows residual adds of BN terms, identity, option-A and 1x1 conv + "
                          "BN shortcuts, and a flatten before the classifier; re-factorize the model (no ReLU, no "
                          "avg-pool: model.refactor: true, cimnas.convert(refactor=True))")

    for node in graph.nodes:
        ins = _streams_in((node.args, node.kwargs), info)
        shape = _shape(node)
        if node.op == "call_module":
            mod = fused.get_submodule(node.target)
            if isinstance(mod, IntegerAffine):
                parent.append(len(parent))
                terms.append(node.target)
                out.node_of[node.target] = node
                info[node] = Stream(len(parent) - 1, int(shape[1]))
            elif isinstance(mod, _IntegerLayer) and ins:
                out.readers[node.target], out.node_of[node.target] = ins[0], node
            elif isinstance(mod, nn.Identity) and ins:
                info[node] = ins[0]
            elif isinstance(mod, nn.Flatten) and ins:
                info[node] = _flatten(node, ins[0], mod.start_dim, mod.end_dim, refuse)
            elif ins:
                refuse(node, f"{type(mod).__name__} {node.target!r}")
        elif node.op in ("call_function", "call_method") and ins:
            fn = node.target
            if fn is getattr or fn in ("size", "dim"):  # shape reads (option A: match_channels(x, out.shape[1]))
                continue
            tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
            if fn in ADDS or fn in ADD_METHODS:
                if len(ins) != 2 or len(tensors) != 2 or len(node.args) > 2 or node.kwargs:
                    refuse(node, "an add whose operands are not two residual terms / streams")
                a, b = (info[t] for t in tensors)
                parent[find(b.root)] = find(a.root)
                info[node] = Stream(a.root, int(shape[1]))
                out.adds.append(node)
            elif fn in FLATTENS or fn == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                info[node] = _flatten(node, ins[0], start, end, refuse)
            elif fn is match_channels:
                info[node] = Stream(ins[0].root, int(shape[1]))
            elif fn is operator.getitem and _subsample_only(node.args[1]):
                info[node] = ins[0]
            else:
                refuse(node, f"the operation {getattr(fn, '__name__', fn)}")
        elif node.op == "output" and ins:
            refuse(node, "the model's output (the last layer must be a crossbar layer)")
    roots = {}
    for name in terms:
        r = find(info[out.node_of[name]].root)
        roots.setdefault(r, len(roots))
        while len(out.segments) <= roots[r]:
            out.segments.append([])
        out.segments[roots[r]].append(name)
    out.reader_segment = {n: roots[find(s.root)] for n, s in out.readers.items()}
    return out


def _flatten(node: fx.Node, s: Stream, start, end, refuse) -> Stream:
    in_shape = _shape(node.args[0]) if isinstance(node.args[0], fx.Node) else ()
    if start != 1 or end not in (-1, len(in_shape) - 1) or s.flat:
        refuse(node, "a flatten other than flatten(x, 1)")
    positions = 1
    for d in in_shape[2:]:
        positions *= int(d)
    return Stream(s.root, s.channels, positions, True)


__all__ = ["Stream", "StreamGraph", "trace_graph", "trace_streams"]
