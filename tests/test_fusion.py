"""Fused deployment form: BN + binarization as integer comparators give the same network."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from cimnas.errors import CimnasError
from cimnas.nn.fusion import (
    IntegerAffine,
    IntegerConv2d,
    IntegerLinear,
    ThresholdComparator,
    comparator_bits,
    fuse_model,
)
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.models import build_model


def randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial eval statistics: shifted means, varied variances, gamma < 0 and gamma == 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, _BatchNorm):
                c = bn.num_features
                bn.running_mean.copy_(torch.randn(c, generator=g) * 2.0)
                bn.running_var.copy_(torch.rand(c, generator=g) * 3.0 + 0.1)
                gamma = torch.randn(c, generator=g)
                gamma[0] = 0.0
                bn.weight.copy_(gamma)
                bn.bias.copy_(torch.randn(c, generator=g) * 0.5 + 0.5)


def trained_binary(name, shape, seed=0, **kw):
    m = build_model(name, in_channels=shape[0], num_classes=10, image_size=list(shape[1:]),
                    precision="binary", seed=seed, **kw)
    randomize_bn(m, seed + 1)
    return m.double().eval()


def record_binary_inputs(model, fused, x):
    """Binary input codes of every layer in the original and in the fused network."""
    ref, got = {}, {}
    hooks = []
    for n, mod in model.named_modules():
        if isinstance(mod, QConv2d | QLinear):
            hooks.append(mod.input_quantizer.register_forward_hook(lambda _m, _i, o, n=n: ref.__setitem__(n, o)))
    for n, mod in fused.named_modules():
        if isinstance(mod, IntegerConv2d | IntegerLinear):
            hooks.append(mod.input_code.register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, o)))
    y_ref, y_got = model(x), fused(x)
    for h in hooks:
        h.remove()
    return ref, got, y_ref, y_got


CASES = [
    ("lenet5", (1, 16, 16), {}),
    ("resnet20", (3, 16, 16), {}),
    ("resnet20", (3, 12, 12), {"refactor": {"thermometer": True, "thermometer_levels": 8, "topology_mod": False}}),
    ("resnet20", (3, 8, 8), {"widths": "hawis-a"}),
]


@pytest.mark.parametrize("name,shape,kw", CASES)
def test_fused_equals_trained_model(name, shape, kw):
    model = trained_binary(name, shape, **kw)
    fused = fuse_model(model)
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref, got, y_ref, y_got = record_binary_inputs(model, fused, x)
    assert set(ref) == set(got) and len(ref) == sum(isinstance(m, QConv2d | QLinear) for m in model.modules())
    for n in ref:
        assert torch.equal(ref[n], got[n]), f"binary activations differ at {n}"
        frac = got[n].mean().item()
        if n not in ("conv1", "fcs.0"):
            assert 0.0 < frac < 1.0, f"degenerate activations at {n}"  # the check is not vacuous
    assert torch.equal(y_ref.argmax(1), y_got.argmax(1))
    torch.testing.assert_close(y_got, y_ref, rtol=1e-9, atol=1e-9)
    assert any(isinstance(m, ThresholdComparator) for m in fused.modules())
    assert not any(isinstance(m, _BatchNorm) for m in fused.modules())
    assert 2 <= comparator_bits(fused) <= 16


def test_comparators_cover_lenet_and_residual_bns_stay_affine():
    fused = fuse_model(trained_binary("resnet20", (3, 8, 8)))
    assert isinstance(fused.blocks[0].bn1, ThresholdComparator)  # feeds only conv2's binarizer
    assert isinstance(fused.blocks[0].bn2, IntegerAffine)  # feeds the residual add
    assert isinstance(fused.bn1, IntegerAffine)  # stem: feeds block 0 and its shortcut
    lenet = fuse_model(trained_binary("lenet5", (1, 8, 8)))
    assert all(isinstance(getattr(lenet, f"bn{i}"), ThresholdComparator) for i in range(1, 5))


def test_comparator_exhaustive_against_bn_on_every_integer():
    """For every channel and every reachable integer Z: [Z cmp theta] == round(clip(bn(alpha Z), 0, 1))."""
    model = trained_binary("lenet5", (1, 8, 8), seed=5)
    fused = fuse_model(model)
    for layer_name, bn_name in (("conv2", "bn2"), ("fc1", "bn3"), ("fc2", "bn4")):
        layer, bn = getattr(model, layer_name), getattr(model, bn_name)
        comp = getattr(fused, bn_name)
        fan_in = layer.weight[0].numel()
        z = torch.arange(-fan_in, fan_in + 1, dtype=torch.float64)
        alpha = layer.weight.abs().mean().double()
        zz = z.view(-1, 1).expand(-1, bn.num_features)
        pre = alpha * zz + (layer.bias.double() if layer.bias is not None else 0.0)
        expect = torch.round(torch.clamp(torch.nn.functional.batch_norm(
            pre, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps), 0, 1))
        assert torch.equal(comp(zz.clone()), expect)
        assert comp.mode[0] == 0  # gamma == 0 channel -> constant output
        assert (comp.mode < 0).any() and (comp.mode > 0).any()  # both comparator directions used
        assert comp.theta.abs().max() <= fan_in + 1


def test_hand_threshold_single_channel():
    """alpha = 0.5, BN mu = 1, var = 4, gamma = -2, beta = 0.2:
    y = -(0.5 Z - 1) + 0.2 = 1.2 - 0.5 Z > 0.5 <=> Z < 1.4 <=> Z <= 1 (flipped comparator, theta 1)."""
    m = build_model("mlp", in_channels=1, num_classes=2, image_size=[1, 3], hidden_sizes=[1], bn=True,
                    precision="binary", seed=0)
    with torch.no_grad():
        m.fcs[0].weight.copy_(torch.tensor([[0.5, 0.5, -0.5]]))
        m.fcs[0].bias.zero_()
        bn = m.bns[0]
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
        bn.weight.fill_(-2.0)
        bn.bias.fill_(0.2)
    fused = fuse_model(m.eval())
    comp = fused.bns[0]
    assert comp.mode.item() == -1 and comp.theta.item() == 1
    x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    z = fused.fcs[0](x)
    assert z.flatten().tolist() == [2.0, 1.0, 0.0, -1.0]
    assert comp(z).flatten().tolist() == [0.0, 1.0, 1.0, 1.0]
    hidden = m.bns[0](m.fcs[0](x))  # the unfused model agrees
    assert torch.round(torch.clamp(hidden, 0, 1)).flatten().tolist() == [0.0, 1.0, 1.0, 1.0]


def test_integer_accumulations_are_integers_within_fan_in():
    model = trained_binary("resnet20", (3, 8, 8))
    fused = fuse_model(model).float()
    outs = []
    hooks = [m.register_forward_hook(lambda mod, _i, o: outs.append((mod, o)))
             for m in fused.modules() if isinstance(m, IntegerConv2d) and m.emit_integer]
    fused(torch.rand(4, 3, 8, 8))
    for h in hooks:
        h.remove()
    assert outs
    for mod, z in outs:
        assert torch.equal(z, torch.round(z)) and z.abs().max() <= mod.fan_in


def test_fused_sliced_supernet_matches():
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=8, precision="binary",
                        widths=[24] * 19, seed=0)
    randomize_bn(model, 9)
    model = model.double().eval()
    model.set_widths([16, 20, 24, 8, 24, 12, 16] + [24] * 12)
    fused = fuse_model(model)
    x = torch.rand(8, 3, 8, 8, dtype=torch.float64)
    ref, got, y_ref, y_got = record_binary_inputs(model, fused, x)
    assert all(torch.equal(ref[n], got[n]) for n in ref)
    assert torch.equal(y_ref.argmax(1), y_got.argmax(1))


def test_fuse_rejects_non_binary_models():
    with pytest.raises(CimnasError, match="fully binarized"):
        fuse_model(build_model("lenet5", in_channels=1, num_classes=10, image_size=8, seed=0))
    m = build_model("lenet5", in_channels=1, num_classes=10, image_size=8, precision="binary",
                    refactor={"binarize_last": False}, seed=0)
    with pytest.raises(CimnasError, match="fully binarized"):
        fuse_model(m)
