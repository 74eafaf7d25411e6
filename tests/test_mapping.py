"""Mapping: conductances (HAWIS Eq. 2), bit slices, tiling, ideal round trip, crossbar dataflow."""

import pytest
import torch
import torch.nn.functional as F

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.mapping import map_layer, map_model
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight, DoReFaActivation, DoReFaWeight, Identity


def make_net(kind: str, w: int = 12, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "binary":
        aq, wq = BinaryActivation, BinaryWeight
    else:
        aq, wq = (lambda: DoReFaActivation(8)), (lambda: DoReFaWeight(8))
    return torch.nn.Sequential(
        QConv2d(1, w, 3, input_quantizer=Identity(), weight_quantizer=wq()),
        torch.nn.BatchNorm2d(w),
        QConv2d(w, w, 3, stride=2, input_quantizer=aq(), weight_quantizer=wq()),
        torch.nn.BatchNorm2d(w),
        torch.nn.Flatten(),
        QLinear(w * 4 * 4, 10, input_quantizer=aq(), weight_quantizer=wq()),
    ).eval()


def test_binary_weights_to_differential_pair():
    spec = CrossbarSpec()
    layer = QLinear(4, 2, bias=False, weight_quantizer=BinaryWeight())
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.2, 0.1, -0.4], [-1.0, 1.0, 0.0, 0.3]]))
    ml = map_layer("fc", layer, spec)
    plus = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    # HAWIS Eq. 2: +1 -> (Gmax, Gmin); -1 -> (Gmin, Gmax)
    assert torch.equal(ml.g_pos[0], torch.where(plus, spec.g_max_s, spec.g_min_s).float())
    assert torch.equal(ml.g_neg[0], torch.where(plus, spec.g_min_s, spec.g_max_s).float())
    assert torch.allclose(ml.read_weight(), layer.quantized_weight())


def test_multibit_slices_and_significance():
    spec = CrossbarSpec(bits_per_cell=2)
    layer = QLinear(3, 1, bias=False, weight_quantizer=DoReFaWeight(4))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -0.05, -2.0]]))
    codes, _ = layer.weight_quantizer.to_integer(layer.weight)
    ml = map_layer("fc", layer, spec)
    assert ml.slices == 2
    levels = ml.slice_values()  # (2, 1, 3) signed levels 0..3 per slice
    rebuilt = levels[0] + 4 * levels[1]
    assert torch.allclose(rebuilt, codes, atol=1e-4)
    assert codes.abs().max() == 15


def test_conv_unrolled_and_tiled():
    spec = CrossbarSpec()
    layer = QConv2d(112, 112, 3, weight_quantizer=BinaryWeight())
    ml = map_layer("c", layer, spec)
    assert ml.g_pos.shape == (1, 112, 112 * 9)
    assert ml.tiles["crossbars"] == 4 and ml.tiles["row_tiles"] == 4


@pytest.mark.parametrize("kind", ["binary", "kbit"])
def test_ideal_mapping_keeps_predictions(kind):
    net = make_net(kind)
    for m in net:
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
        mapped = map_model(net, CrossbarSpec())
        mapped.apply_ideal()
        assert all(m.weight_override is not None for m in net if isinstance(m, QConv2d | QLinear))
        out = net(x)
        mapped.restore()
        assert all(m.weight_override is None for m in net if isinstance(m, QConv2d | QLinear))
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_float_layer_cannot_be_mapped():
    with pytest.raises(CimnasError, match="float weights"):
        map_model(torch.nn.Sequential(QLinear(3, 2)), CrossbarSpec())


def test_bits_per_cell_not_dividing_is_error():
    with pytest.raises(CimnasError, match="does not divide"):
        map_model(make_net("kbit"), CrossbarSpec(bits_per_cell=3))


@pytest.mark.parametrize("bpc", [1, 2])
def test_crossbar_dataflow_matches_matmul(bpc):
    # bit-serial DAC, slices, tiles (28 channels per 256-row tile -> 2 row tiles), pos - neg
    spec = CrossbarSpec(bits_per_cell=bpc)
    layer = QConv2d(40, 6, 3, weight_quantizer=DoReFaWeight(4), input_quantizer=DoReFaActivation(4))
    ml = map_layer("c", layer, spec)
    g = torch.Generator().manual_seed(0)
    x_codes = torch.randint(0, 16, (5, 40 * 9), generator=g).float()
    codes, _ = layer.weight_quantizer.to_integer(layer.weight.detach())
    ref = x_codes.double() @ codes.reshape(6, -1).double().T
    assert torch.allclose(ml.crossbar_forward(x_codes), ref, atol=1e-6)
    # a conv computed through unfold + crossbars equals F.conv2d on integer codes
    img = torch.randint(0, 16, (2, 40, 5, 5), generator=g).float()
    cols = F.unfold(img, 3, padding=1).transpose(1, 2).reshape(-1, 360)
    y = ml.crossbar_forward(cols).reshape(2, 25, 6).permute(0, 2, 1).reshape(2, 6, 5, 5)
    assert torch.allclose(y.float(), F.conv2d(img, codes, padding=1), atol=1e-3)


def test_adc_quantization_stays_exact_when_rows_fit():
    # binary inputs and weights: column sums of <= 63 rows fit a 6-bit ADC exactly
    spec = CrossbarSpec()
    layer = QLinear(200, 3, bias=False, weight_quantizer=BinaryWeight())
    ml = map_layer("fc", layer, spec)
    x = (torch.rand(4, 200, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    assert torch.allclose(ml.crossbar_forward(x, adc=True), ml.crossbar_forward(x))
    # with a 3-bit ADC (7 rows per read) the result is still exact, just slower
    spec3 = CrossbarSpec(adc_bits=3)
    ml3 = map_layer("fc", layer, spec3)
    assert torch.allclose(ml3.crossbar_forward(x, adc=True), ml.crossbar_forward(x))
