"""Quantizers: output sets and straight-through gradients against hand computations."""

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.nn.quantizers import (
    QUANTIZERS,
    BinaryActivation,
    BinaryWeight,
    DoReFaActivation,
    DoReFaWeight,
    FixedPoint,
    make_quantizer,
)


def test_binary_activation_values_and_clipped_ste():
    x = torch.tensor([-1.0, 0.2, 0.5, 0.7, 1.0, 1.5], requires_grad=True)
    y = BinaryActivation()(x)
    # round(clip(x,0,1)); torch rounds half to even: 0.5 -> 0
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_binary_weight_two_values_scale_mean_abs_and_ste():
    w = torch.tensor([[0.5, -0.25], [0.0, -1.0]], requires_grad=True)
    y = BinaryWeight()(w)
    alpha = (0.5 + 0.25 + 0.0 + 1.0) / 4
    assert torch.allclose(y, torch.tensor([[alpha, -alpha], [alpha, -alpha]]))
    assert len(torch.unique(y)) == 2
    (y * torch.arange(4.0).view(2, 2)).sum().backward()
    assert torch.equal(w.grad, torch.arange(4.0).view(2, 2))  # identity STE
    codes, scale = BinaryWeight().to_integer(w.detach())
    assert torch.allclose(codes * scale, y.detach())


def test_dorefa_weight_levels_and_integer_codes():
    torch.manual_seed(0)
    w = torch.randn(200)
    q = DoReFaWeight(2)(w)
    assert set(torch.round(q * 3).tolist()) <= {-3.0, -1.0, 1.0, 3.0}
    assert q.abs().max() == 1.0
    codes, scale = DoReFaWeight(2).to_integer(w)
    assert torch.allclose(codes * scale, q)
    assert codes.abs().max() <= 3


def test_dorefa_weight_gradient_is_tanh_chain():
    w = torch.tensor([0.1, -0.4, 0.9], requires_grad=True)
    q = DoReFaWeight(8)(w)
    q.sum().backward()
    # with round as identity: q = tanh(w)/max|tanh| - 1 + 1 -> dq/dw = sech^2(w)/max|tanh(w)| (max detached)
    t = torch.tanh(w.detach())
    expected = (1 - t**2) / t.abs().max()
    assert torch.allclose(w.grad, expected, atol=1e-6)


def test_dorefa_activation():
    x = torch.tensor([-0.5, 0.1, 0.5, 2.0], requires_grad=True)
    q = DoReFaActivation(2)(x)
    assert torch.allclose(q, torch.tensor([0.0, 0.0, 2 / 3, 1.0]))
    q.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("int_bits,frac_bits,lo,hi", [(1, 2, -1.0, 0.75), (0, 3, -0.5, 0.375), (3, 0, -4.0, 3.0)])
def test_fixed_point_range_and_step(int_bits, frac_bits, lo, hi):
    f = FixedPoint(int_bits, frac_bits)
    x = torch.linspace(-10, 10, 2001, requires_grad=True)
    y = f(x)
    assert y.min().item() == lo and y.max().item() == hi
    step = 2.0**-frac_bits
    assert torch.allclose(torch.round(y / step) * step, y)
    y.sum().backward()
    inside = (x.detach() >= lo) & (x.detach() <= hi)
    assert torch.equal(x.grad, inside.float())
    codes, scale = f.to_integer(x.detach())
    assert torch.allclose(codes * scale, y.detach())


def test_registry_and_bad_specs():
    assert {"identity", "binary_act", "binary_weight", "dorefa_weight", "dorefa_act", "fixed_point"} <= set(
        QUANTIZERS.names()
    )
    assert make_quantizer({"name": "fixed_point", "int_bits": 2, "frac_bits": 3}).bits == 5
    with pytest.raises(CimnasError, match="unknown quantizer"):
        make_quantizer("ternary")
    with pytest.raises(CimnasError):
        FixedPoint(-1, 2)
    with pytest.raises(CimnasError):
        DoReFaWeight(0)


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_every_registered_quantizer_runs_forward_backward(name):
    q = QUANTIZERS.create(name)
    x = torch.randn(5, 4, requires_grad=True)
    q(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["binary_act", "binary_weight", "dorefa_weight", "dorefa_act", "fixed_point"])
def test_quantizers_work_under_vmap(name):
    # the UAE analysis vmaps models over noise samples; quantizers must support it
    q = QUANTIZERS.create(name)
    x = torch.randn(3, 4, 5)
    batched = torch.vmap(q)(x)
    looped = torch.stack([q(xi) for xi in x])
    assert torch.allclose(batched, looped)


# ---------------------------------------------------------------- fused binary functions vs the formulas
def _edge_values(dtype):
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    vals = [-0.0, 0.0, 0.5, 1.0, -1.0, 2.0, float("inf"), float("-inf")]
    if dtype in (torch.float32, torch.float64):
        one, zero = one.to(dtype), zero.to(dtype)
        vals += [torch.nextafter(zero, -one).item(), torch.nextafter(zero, one).item(),
                 torch.nextafter(one, 2 * one).item(), torch.nextafter(one, zero).item(),
                 torch.nextafter(one / 2, one).item(), torch.nextafter(one / 2, zero).item()]
    return torch.tensor(vals, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("n", [7, 4099])  # scalar tail only, and the vectorised kernel path
def test_fused_binary_activation_equals_round_clip_and_clipped_ste(dtype, n):
    g = torch.Generator().manual_seed(n)
    x = (torch.rand(n, generator=g, dtype=torch.float64) * 3 - 1).to(dtype)
    edges = _edge_values(dtype)
    pos = torch.randperm(n, generator=g)[: len(edges)]
    x[pos[: min(n, len(edges))]] = edges[: min(n, len(edges))]
    x.requires_grad_(True)
    up = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    y = BinaryActivation()(x)
    y.backward(up)
    xd = x.detach()
    ref = torch.round(torch.clamp(xd, 0.0, 1.0))  # the unfused formula
    assert y.dtype == dtype and torch.equal(y, ref)
    assert torch.equal(x.grad, up * ((xd >= 0) & (xd <= 1)).to(dtype))


def test_fused_binary_activation_inclusive_bounds_and_threshold():
    x = torch.tensor([-0.0, 0.0, 1.0, 0.5, torch.nextafter(torch.tensor(0.5), torch.tensor(1.0)).item()],
                     requires_grad=True)
    y = BinaryActivation()(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (10, 33)])
def test_fused_binary_weight_equals_where_formula_and_identity_grad(shape):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(shape, generator=g)
    w.view(-1)[:3] = torch.tensor([0.0, -0.0, 1e-30])
    w = w[:, : shape[1] - 1]  # a sliced (non-contiguous) weight, as active_in makes it
    w.requires_grad_(True)
    y = BinaryWeight()(w)
    alpha = w.detach().abs().mean()
    assert torch.equal(y, torch.where(w.detach() >= 0, alpha, -alpha))  # bitwise: exactly +-alpha
    assert y.view(-1)[:2].tolist() == [alpha.item(), alpha.item()]  # sign(+0) = sign(-0) = +1
    up = torch.randn(y.shape, generator=g)
    y.backward(up)
    assert torch.equal(w.grad, up)
    codes, scale = BinaryWeight().to_integer(w.detach())
    assert torch.equal(codes * scale, y.detach())


def test_binary_weight_vmap_scales_each_sample():
    w = torch.randn(3, 4, 5) * torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1)
    out = torch.vmap(BinaryWeight(), in_dims=1, out_dims=1)(w.transpose(0, 1))
    for i in range(3):
        assert torch.allclose(out[:, i].abs(), w[i].abs().mean().expand(4, 5))
