"""Every registered model (timm style): float / binary / kbit builds, forward shapes,
arch_meta rebuild, and set_widths equivalence with a model built at the smaller widths."""

from __future__ import annotations

import json

import pytest
import torch

from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.models import MODELS, WidthSearchable, build_model, rebuild_model

# small inputs per model (keep the suite fast); extra build kwargs for models that need them
SHAPES = {"resnet18": (3, 32, 32), "lenet5": (1, 8, 8), "mlp": (1, 8, 8)}
EXTRA = {
    "uae_cnn": {"channels": [4, 6], "kernels": [3, 5], "int_bits": [1, 2], "frac_bits": [3, 4], "fc_hidden": 16},
}


def shape_of(name: str) -> tuple[int, int, int]:
    return SHAPES.get(name, (3, 8, 8))


def build(name: str, **kw) -> torch.nn.Module:
    c, h, _ = shape_of(name)
    return build_model(name, in_channels=c, num_classes=5, image_size=h, seed=0, **EXTRA.get(name, {}), **kw)


def slice_state_into(big: torch.nn.Module, small: torch.nn.Module) -> None:
    """Copy the first channels of every tensor of `big` into `small` (slimmable sub-net)."""
    src = big.state_dict()
    with torch.no_grad():
        for k, t in small.state_dict().items():
            t.copy_(src[k][tuple(slice(0, n) for n in t.shape)] if t.dim() else src[k])


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("precision", ["float", "binary", "kbit"])
def test_builds_and_runs(name, precision):
    model = build(name, precision=precision)
    x = torch.rand(2, *shape_of(name), generator=torch.Generator().manual_seed(0))
    y = model(x)
    assert y.shape == (2, 5)
    assert torch.isfinite(y).all()
    layers = [m for m in model.modules() if isinstance(m, QConv2d | QLinear)]
    assert layers, "every model computes with QConv2d / QLinear"
    if precision == "binary":
        assert all(m.weight_quantizer.bits == 1 and m.input_quantizer.bits == 1 for m in layers)
    if precision == "kbit":
        assert all(m.weight_quantizer.bits == 8 and m.input_quantizer.bits == 8 for m in layers)
    # gradients reach every weight
    y.sum().backward()
    assert all(m.weight.grad is not None for m in layers)


@pytest.mark.parametrize("name", MODELS.names())
def test_arch_meta_rebuilds_same_structure(name):
    model = build(name, precision="binary")
    meta = json.loads(json.dumps(model.arch_meta))  # plain JSON
    again = rebuild_model(meta)
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("name", [n for n in MODELS.names()])
@pytest.mark.parametrize("precision", ["float", "binary"])
def test_set_widths_equals_model_built_with_those_widths(name, precision):
    big0 = build(name, precision=precision)
    if not isinstance(big0, WidthSearchable):
        pytest.skip(f"{name} has no width vector")
    base = big0.base_widths
    g = torch.Generator().manual_seed(len(base))
    built = [b + 3 for b in base]
    # different widths per layer (mismatched residual widths included), all <= built
    small_w = [int(torch.randint(1, m + 1, (1,), generator=g)) for m in built]
    big = build(name, precision=precision, widths=built)
    small = build(name, precision=precision, widths=small_w)
    slice_state_into(big, small)
    big.set_widths(small_w)
    assert big.widths == small_w
    x = torch.rand(3, *shape_of(name), generator=g)
    for mode in ("eval", "train"):
        getattr(big, mode)()
        getattr(small, mode)()
        torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-5)
    big.set_widths(built)  # back to full width: no slicing left
    assert all(m.active_in is None and m.active_out is None
               for m in big.modules() if isinstance(m, QConv2d | QLinear))


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n != "uae_cnn"])
def test_searchable_layer_names_match_widths_and_trace(name):
    from cimnas.nn.counting import trace_layers

    size = 32 if name == "resnet18" else 8
    m = build_model(name, in_channels=1, num_classes=10, image_size=size)
    names = m.searchable_layer_names()
    assert len(names) == len(m.base_widths)
    traced = {g.name: g for g in trace_layers(m, (1, size, size))}
    assert [traced[n].out_channels for n in names] == m.widths
