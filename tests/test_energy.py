"""Energy model: one tile by hand, monotone in width, HAWIS Fig. 5 tile count."""

import math

import pytest
import torch

from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.energy import estimate, estimate_arch, estimate_layer, estimate_model, tile_layer
from cimnas.nn.counting import LayerGeom, trace_layers
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight


def conv(cin, cout, k=3, hw=8, wb=1, ab=1):
    return LayerGeom("c", "conv", cin, cout, k, 1, (hw, hw), (hw, hw), wb, ab)


def test_112x112_conv_is_four_crossbars():
    t = tile_layer(conv(112, 112), CrossbarSpec())
    assert (t["row_tiles"], t["col_tiles"], t["crossbars"]) == (4, 1, 4)
    assert t["utilization"] == pytest.approx(112 * 9 * 112 / (4 * 256 * 256))
    assert tile_layer(conv(113, 112), CrossbarSpec())["crossbars"] == 5


def test_one_tile_by_hand():
    # 2x2 output positions, 3x3 kernel, 4 -> 5 channels, binary {0,1} inputs: one PE, 36 rows, 5 columns
    spec = CrossbarSpec(energy_cell_read_pj=0.001)
    g = conv(4, 5, hw=2)
    r = estimate_layer(g, spec)
    assert r["crossbars"] == 1 and r["charged_crossbars"] == 1 and r["tiles"] == 1
    assert r["max_rows"] == 36 and r["max_columns"] == 5
    P, arrays, cycles = 4, 2, 1  # {0,1} input through a 1-bit DAC: one cycle (HAWIS Eq. 2)
    assert r["input_cycles"] == cycles
    rounds = cycles * math.ceil(36 / 128) * math.ceil(5 / 128)  # MNSIM multiple_time = 1
    assert r["read_rounds"] == rounds == 1
    e = r["energy_pj"]
    assert e["cells"] == pytest.approx(P * rounds * arrays * 36 * 5 * 0.001)
    assert e["dac"] == pytest.approx(P * rounds * 36 * 0.00586)
    assert e["adc"] == pytest.approx(P * rounds * 5 * 5.04)
    assert e["digital"] == pytest.approx(P * rounds * 5 * 0.02)
    psum = (6 + 0) * 5 * 1  # (adc bits + merge bits of 1 PE) x columns x PEs
    assert e["buffer"] == pytest.approx(P * 1 * psum * (2.04 + cycles * 0.573))
    assert r["energy_uj"] == pytest.approx(sum(e.values()) * 1e-6)
    assert r["latency_us"] == pytest.approx(P * (rounds * (3.16 + 1.34 + 4.4) + psum / 16.3) * 1e-3)
    tile = 4 * (2 * (256 * 256 * 1.44 + 256 * 1.0) + 128 * 6370.0) + 300000.0
    assert r["area_mm2"] == pytest.approx(tile * 1e-6)
    assert r["biops"] == 4 * 36 * 5 and r["flops"] == 0
    # MNSIM's signed setting: one more cycle for the sign, twice the crossbar work
    s2 = estimate_layer(g, CrossbarSpec(energy_cell_read_pj=0.001, signed_inputs=True))
    assert s2["input_cycles"] == 2 and s2["energy_pj"]["adc"] == pytest.approx(2 * e["adc"])


def test_signed_quantizer_adds_a_cycle():
    g = LayerGeom("c", "conv", 4, 5, 3, 1, (2, 2), (2, 2), 1, 4, act_signed=True)
    assert estimate_layer(g, CrossbarSpec())["input_cycles"] == 5


def test_multibit_slices_and_cycles():
    spec = CrossbarSpec()
    r1, r8 = estimate_layer(conv(16, 16), spec), estimate_layer(conv(16, 16, wb=8, ab=8), spec)
    # MNSIM: every weight bit slice on its own PEs (Group_Num = 1) -> 8 PEs = 2 tiles of 4
    assert r8["slices"] == 8 and r8["crossbars"] == 8 and r8["tiles"] == 2 and r8["max_columns"] == 16
    # 8 charged PEs x 8 input cycles vs 1 PE x 1 cycle -> 64x the ADC work
    assert r8["energy_pj"]["adc"] == pytest.approx(64 * r1["energy_pj"]["adc"])
    assert r8["flops"] == r1["biops"]


def test_sense_amp_cheaper_for_bnn():
    g = conv(32, 32)
    assert (estimate_layer(g, CrossbarSpec(bnn_readout="sense_amp"))["energy_uj"]
            < estimate_layer(g, CrossbarSpec())["energy_uj"])


def test_adc_and_buffers_dominate():
    layers = [conv(64, 64, hw=8)]
    b = estimate(layers, CrossbarSpec())["energy_breakdown"]
    assert b["adc"] + b["buffer"] > 0.9 and b["cells"] < 0.05


def _net(w):
    return torch.nn.Sequential(
        QConv2d(3, w, 3, input_quantizer=BinaryActivation(), weight_quantizer=BinaryWeight()),
        QConv2d(w, w, 3, stride=2, input_quantizer=BinaryActivation(), weight_quantizer=BinaryWeight()),
        torch.nn.Flatten(),
        QLinear(w * 4 * 4, 10, input_quantizer=BinaryActivation(), weight_quantizer=BinaryWeight()),
    )


def test_energy_grows_with_width():
    spec = CrossbarSpec()
    e = [estimate(trace_layers(_net(w), (3, 8, 8)), spec)["energy_uj"] for w in (8, 16, 32, 64, 128)]
    assert all(a < b for a, b in zip(e, e[1:], strict=False))


def test_cached_geometry_follows_slicing():
    spec = CrossbarSpec()
    big = _net(64)
    full = estimate_model(big, (3, 8, 8), spec)
    layers = [m for m in big if isinstance(m, QConv2d | QLinear)]
    layers[0].active_out = 16
    layers[1].active_in, layers[1].active_out = 16, 16
    layers[2].active_in = 16 * 16
    fast = estimate_model(big, (3, 8, 8), spec)
    ref = estimate(trace_layers(_net(16), (3, 8, 8)), spec)
    assert fast["energy_uj"] == pytest.approx(ref["energy_uj"]) and fast["energy_uj"] < full["energy_uj"]


def test_charged_crossbars_round_to_whole_tiles():
    # 5 PEs with 4 per tile -> 2 tiles x 4 = 8 charged, each read like the fullest one
    spec = CrossbarSpec()
    t = tile_layer(conv(5 * 28, 200), spec)
    assert t["crossbars"] == 5 and t["tiles"] == 2 and t["charged_crossbars"] == 8
    assert tile_layer(conv(3 * 28, 200), spec)["charged_crossbars"] == 3
    r = estimate_layer(conv(5 * 28, 300, hw=1), spec)
    # 252 rows = 2 rounds of 128 DACs; 256 used columns (of 300, 2 column PEs) = 2 rounds of 128 ADCs
    assert r["crossbars"] == 10 and r["charged_crossbars"] == 12 and r["read_rounds"] == 4
    assert r["energy_pj"]["adc"] == pytest.approx(12 * 4 * 256 * 5.04)


def test_resnet20_width_ratios_near_mnsim():
    # HAWIS's own models (option A, flattened classifier, {0,1} inputs) follow MNSIM's width ratios
    # (REFERENCE-FACTS.md, w2 a1 setting: U-2x / U-1x = 3.96, U-4x / U-1x = 16.7)
    spec = CrossbarSpec()
    e = [estimate_arch("resnet20", spec, width_mult=k)["energy_uj"] for k in (1, 2, 4)]
    assert e[1] / e[0] == pytest.approx(31.84 / 8.05, rel=0.10)
    assert e[2] / e[0] == pytest.approx(134.72 / 8.05, rel=0.10)
