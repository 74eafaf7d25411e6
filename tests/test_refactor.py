"""HAWIS re-factorization (III-A-1), k-bit baseline, and the two-side regularizer (Eq. 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.counting import count_ops, trace_layers
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.models import build_model
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight, Identity
from cimnas.nn.refactor import RefactorOptions, ThermometerInput, refactor
from cimnas.nn.regularizers import l2_regularizer, two_side_regularizer


def lenet(precision="float", size=28, **kw):
    return build_model("lenet5", in_channels=1, num_classes=10, image_size=size, precision=precision, seed=0, **kw)


def qlayers(m):
    return [x for x in m.modules() if isinstance(x, QConv2d | QLinear)]


def test_lenet_binary_removes_relu_and_maxpool_keeps_sizes():
    f, b = lenet(), lenet("binary")
    assert any(isinstance(x, nn.ReLU) for x in f.modules())
    assert not any(isinstance(x, nn.ReLU | nn.MaxPool2d) for x in b.modules())
    assert b.conv1.stride == (2, 2) and b.conv2.stride == (2, 2) and f.conv1.stride == (1, 1)
    gf, gb = trace_layers(f, (1, 28, 28)), trace_layers(b, (1, 28, 28))
    # the stride-2 convs give the feature maps the pools gave
    assert [g.out_hw for g in gb[:2]] == [(14, 14), (7, 7)]
    assert [g.in_channels for g in gb] == [g.in_channels for g in gf]
    assert all(isinstance(x.weight_quantizer, BinaryWeight) and isinstance(x.input_quantizer, BinaryActivation)
               for x in qlayers(b))


def test_odd_size_pool_removal_rebuilds_classifier():
    # 7x7 -> pool floor 3, stride-2 conv ceil 4: the FC input is re-traced, not assumed
    b = lenet("binary", size=7)
    assert b(torch.rand(2, 1, 7, 7)).shape == (2, 10)
    assert b.fc1.in_features == 16 * 2 * 2


def test_topology_modification_switch():
    def r20(**opts):
        return build_model("resnet20", in_channels=3, num_classes=10, image_size=32, precision="binary",
                           refactor=opts, seed=0)

    tm, base = r20(), r20(topology_mod=False)
    assert tm.fc.in_features == 64 * 8 * 8 and isinstance(tm.pool, nn.Identity)
    assert base.fc.in_features == 64 and isinstance(base.pool, nn.AdaptiveAvgPool2d)
    # the width vector still slices the flattened classifier correctly
    tm.set_widths([16] * 18 + [40])
    assert tm.fc.active_in == 40 * 64
    assert tm(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_thermometer_first_layer():
    m = build_model("resnet20", in_channels=3, num_classes=10, image_size=16, precision="binary",
                    refactor={"thermometer": True}, seed=0)
    assert m.conv1.in_channels == 96 and isinstance(m.conv1.input_quantizer, ThermometerInput)
    x = torch.tensor([0.0, 0.02, 0.5, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    code = m.conv1.input_quantizer(x)
    assert code.shape == (1, 96, 2, 2)
    # plane i of channel c is [x > (i + 0.5) / 32]: count of ones = round-down of 32 x + 0.5
    ones = code[0, :32].sum(0)
    assert ones.flatten().tolist() == [0.0, 1.0, 16.0, 32.0]
    assert count_ops(trace_layers(m, (3, 16, 16)))["flops"] == 0
    mlp = build_model("mlp", in_channels=1, num_classes=3, image_size=4, precision="binary",
                      refactor={"thermometer": True, "thermometer_levels": 4}, seed=0)
    assert mlp.fcs[0].in_features == 16 * 4 and mlp(torch.rand(2, 1, 4, 4)).shape == (2, 3)


def test_first_and_last_switches_and_counting():
    m = lenet("binary", size=28, refactor={"binarize_first": False, "binarize_last": False})
    q = qlayers(m)
    assert isinstance(q[0].weight_quantizer, Identity) and isinstance(q[-1].input_quantizer, Identity)
    assert all(isinstance(x.weight_quantizer, BinaryWeight) for x in q[1:-1])
    geo = trace_layers(m, (1, 28, 28))
    ops = count_ops(geo)
    assert ops["flops"] == geo[0].macs + geo[-1].macs  # only the float first/last layers
    assert count_ops(trace_layers(lenet("binary"), (1, 28, 28)))["flops"] == 0


def test_binary_weights_take_two_values_and_inputs_are_binary():
    m = lenet("binary", size=8)
    seen = []
    hooks = [x.input_quantizer.register_forward_hook(lambda _m, _i, o: seen.append(o)) for x in qlayers(m)]
    m(torch.rand(4, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert len(seen) == 5 and all(set(o.unique().tolist()) <= {0.0, 1.0} for o in seen)
    for x in qlayers(m):
        w = x.quantized_weight()
        alpha = x.weight.abs().mean()
        assert set(w.unique().tolist()) <= {alpha.item(), -alpha.item()}


def test_refactor_options_validation():
    with pytest.raises(CimnasError, match="unknown refactor option"):
        RefactorOptions.from_any({"thermo": True})
    with pytest.raises(CimnasError, match="binarize_first"):
        RefactorOptions.from_any({"thermometer": True, "binarize_first": False})
    with pytest.raises(CimnasError, match="thermometer_levels"):
        RefactorOptions.from_any({"thermometer_levels": 0})
    with pytest.raises(CimnasError, match="true or false"):
        RefactorOptions.from_any({"topology_mod": "yes"})
    with pytest.raises(CimnasError, match="input_shape"):
        refactor(nn.Sequential(QLinear(4, 2)))


def test_refactor_generic_module():
    # refactor() works on any module built from QConv2d/QLinear and module activations/pools
    net = nn.Sequential(QConv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), QLinear(4, 3))
    refactor(net, RefactorOptions(), (1, 8, 8))
    assert net[0].stride == (2, 2) and isinstance(net[2], nn.Identity) and isinstance(net[3], nn.Identity)
    assert isinstance(net[4], nn.Identity) and net[6].in_features == 4 * 4 * 4
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_kbit_baseline():
    m = lenet("kbit", bits=4)
    assert all(x.weight_quantizer.bits == 4 and x.input_quantizer.bits == 4 for x in qlayers(m))
    assert any(isinstance(x, nn.ReLU) for x in m.modules())  # topology unchanged


def test_two_side_regularizer_hand_computation():
    net = nn.Sequential(QConv2d(1, 1, 1, padding=0), nn.BatchNorm2d(1), QLinear(2, 1, bias=True))
    with torch.no_grad():
        net[0].weight.fill_(0.5)
        net[2].weight.copy_(torch.tensor([[-0.02, 0.0]]))
        net[2].bias.fill_(7.0)  # biases and BN are not regularized
        net[1].weight.fill_(3.0)
    # (0.5 - 0.01)^2 + (0.02 - 0.01)^2 + (0 - 0.01)^2 = 0.2401 + 0.0001 + 0.0001
    expected = 1e-4 * (0.49**2 + 0.01**2 + 0.01**2)
    got = two_side_regularizer(net)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert two_side_regularizer(net, w0=0.0, coef=1.0).item() == pytest.approx(0.25 + 0.0004, rel=1e-6)
    assert l2_regularizer(net, coef=1.0).item() == pytest.approx(0.25 + 0.0004, rel=1e-6)
    # its gradient pushes |w| towards w0: d/dw (|w| - w0)^2 = 2 (|w| - w0) sign(w)
    reg = two_side_regularizer(net, w0=0.01, coef=1.0)
    reg.backward()
    assert net[0].weight.grad.item() == pytest.approx(2 * 0.49, rel=1e-6)
    assert net[2].weight.grad[0, 0].item() == pytest.approx(-2 * 0.01, rel=1e-5)
    with pytest.raises(CimnasError):
        two_side_regularizer(net, coef=-1.0)
