"""Quantized / slimmable layers, channel matching and thermometer coding."""

import torch
import torch.nn.functional as F

from cimnas.nn.layers import QConv2d, QLinear, SlimmableBatchNorm2d, ThermometerEncoding, match_channels
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight


def test_qconv_float_equals_conv2d():
    torch.manual_seed(0)
    c = QConv2d(3, 5, 3, stride=2)
    x = torch.randn(2, 3, 9, 9)
    assert torch.allclose(c(x), F.conv2d(x, c.weight, None, 2, 1))


def test_binary_conv_uses_binary_inputs_and_weights():
    torch.manual_seed(0)
    c = QConv2d(2, 4, 3, input_quantizer=BinaryActivation(), weight_quantizer=BinaryWeight())
    x = torch.rand(1, 2, 5, 5) * 2 - 0.5
    alpha = c.weight.abs().mean()
    ref = F.conv2d(torch.round(x.clamp(0, 1)), torch.sign(c.weight) * alpha, None, 1, 1)
    assert torch.allclose(c(x), ref, atol=1e-6)
    # integer accumulation: output / alpha is an integer
    out = c(x) / alpha
    assert torch.allclose(out, torch.round(out), atol=1e-4)


def test_slicing_equals_small_layer():
    torch.manual_seed(0)
    big = QLinear(8, 6)
    big.active_in, big.active_out = 5, 3
    small = QLinear(5, 3)
    small.weight.data.copy_(big.weight.data[:3, :5])
    small.bias.data.copy_(big.bias.data[:3])
    x = torch.randn(4, 5)
    assert torch.allclose(big(x), small(x))


def test_weight_override_hook():
    c = QLinear(3, 2, bias=False)
    c.weight_override = torch.ones(2, 3)
    assert torch.allclose(c(torch.ones(1, 3)), torch.full((1, 2), 3.0))
    c.weight_override = None
    assert torch.allclose(c(torch.ones(1, 3)), c.weight.sum(1, keepdim=True).T)


def test_slimmable_bn_matches_small_bn_in_eval():
    bn = SlimmableBatchNorm2d(6).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    small = torch.nn.BatchNorm2d(4).eval()
    for name in ("running_mean", "running_var", "weight", "bias"):
        getattr(small, name).data.copy_(getattr(bn, name).data[:4])
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(bn(x), small(x), atol=1e-6)


def test_match_channels_pad_and_truncate():
    x = torch.randn(2, 3, 4, 4)
    p = match_channels(x, 5)
    assert p.shape[1] == 5 and torch.equal(p[:, :3], x) and (p[:, 3:] == 0).all()
    assert torch.equal(match_channels(x, 2), x[:, :2])


def test_thermometer_encoding():
    t = ThermometerEncoding(4)  # thresholds 0.125, 0.375, 0.625, 0.875
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    out = t(x)
    assert out.shape == (1, 4, 1, 3)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0, 0]
    assert out[0, :, 0, 1].tolist() == [1, 1, 0, 0]
    assert out[0, :, 0, 2].tolist() == [1, 1, 1, 1]
