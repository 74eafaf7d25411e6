"""mnsim-default agrees with MNSIM-2.0 on ResNet-20, component by component (REFERENCE-FACTS.md).

Goal (issue 12 item 4): total energy within 10 %, every component's share within 5 points,
latency and area within 25 %, at U-1x / 2x / 4x in both input settings and at 8 bit.
"""

import json

import pytest
import torch

from cimnas.hardware.crossbar import load_spec
from cimnas.hardware.energy import COMPONENTS, estimate, estimate_arch
from cimnas.nn.counting import arch_geometry, trace_layers
from cimnas.nn.models import build_model
from cimnas.nn.supernet import SuperNet

# REFERENCE-FACTS.md "MNSIM-2.0 per component": (width, input setting) ->
# total, crossbar, DAC, ADC, buffers, digital + pool (uJ), latency us, area mm^2, crossbars (arrays)
MNSIM = {
    (1, "w2a2"): (11.71, 0.026, 0.043, 5.49, 6.13, 0.020, 409, 99.3, 76),
    (2, "w2a2"): (45.49, 0.124, 0.115, 21.22, 23.89, 0.144, 768, 120.9, 122),
    (4, "w2a2"): (193.81, 0.583, 0.226, 98.43, 93.87, 0.703, 1627, 168.4, 210),
    (1, "w2a1"): (8.05, 0.013, 0.022, 2.75, 5.25, 0.019, 279, 99.3, 76),
    (2, "w2a1"): (31.84, 0.062, 0.057, 10.61, 20.97, 0.142, 558, 120.9, 122),
    (4, "w2a1"): (134.72, 0.292, 0.113, 49.22, 84.41, 0.695, 1263, 168.4, 210),
    (1, "w9a9"): (337.53, 0.929, 1.565, 197.69, 136.87, 0.480, 1806, 332.5, 608),
}
ORDER = ("cells", "dac", "adc", "buffer", "digital")  # the reference table's column order


def mnsim_resnet20(width: int, setting: str) -> dict:
    """MNSIM's ResNet-20: option-B shortcuts, pooled classifier; w2a2 = signed setting."""
    spec = load_spec("mnsim-default", [f"signed_inputs={setting != 'w2a1'}"])
    if setting == "w9a9":
        return estimate_arch("resnet20", spec, width_mult=width, precision="kbit", bits=8, shortcut="B")
    return estimate_arch("resnet20", spec, width_mult=width, precision="binary", shortcut="B",
                         refactor={"topology_mod": False})


@pytest.mark.parametrize("key", list(MNSIM), ids=[f"U-{w}x-{s}" for w, s in MNSIM])
def test_matches_mnsim_component_by_component(key):
    ref = MNSIM[key]
    r = mnsim_resnet20(*key)
    assert set(ORDER) == set(COMPONENTS)
    assert r["energy_uj"] == pytest.approx(ref[0], rel=0.10)
    for i, c in enumerate(ORDER):
        share, ref_share = r["energy_components_uj"][c] / r["energy_uj"], ref[1 + i] / ref[0]
        assert abs(share - ref_share) < 0.05, (c, share, ref_share)
    assert r["latency_us"] == pytest.approx(ref[6], rel=0.25)
    assert r["area_mm2"] == pytest.approx(ref[7], rel=0.25)
    assert r["arrays"] == ref[8]  # the mapping itself is MNSIM's, exactly


def test_signed_setting_doubles_binary_crossbar_work():
    # a {0,1} BNN input is one DAC cycle; MNSIM's signed setting charges two (HAWIS Eq. 2 vs +-1)
    a1, a2 = mnsim_resnet20(1, "w2a1"), mnsim_resnet20(1, "w2a2")
    for c in ("cells", "dac", "adc"):
        assert a2["energy_components_uj"][c] == pytest.approx(2 * a1["energy_components_uj"][c])
    assert all(lay["input_cycles"] == 1 for lay in a1["layers"])


def test_eight_bit_ratio_near_table_ii():
    # HAWIS Table II: Quan-8bit / U-1x = 1387 / 32.7 = 42.4; MNSIM with the w2a1 BNN: 41.9
    ratio = mnsim_resnet20(1, "w9a9")["energy_uj"] / mnsim_resnet20(1, "w2a1")["energy_uj"]
    assert ratio == pytest.approx(337.53 / 8.05, rel=0.10)


@pytest.mark.parametrize("kw", [
    dict(width_mult=4, precision="binary"),
    dict(width_mult=2, precision="binary", shortcut="B", refactor={"topology_mod": False, "thermometer": True}),
    dict(widths="hawis-b", precision="binary", refactor={"binarize_first": False, "binarize_last": False}),
    dict(width_mult=1.5, precision="kbit", bits=4, shortcut="B"),
    dict(precision="float"),
])
def test_closed_form_geometry_equals_trace(kw):
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32, **kw)
    assert arch_geometry("resnet20", in_channels=3, num_classes=10, image_size=32, **kw) == \
        trace_layers(model, (3, 32, 32))


def test_meta_fallback_allocates_nothing_and_matches():
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=28, precision="binary")
    spec = load_spec("mnsim-default")
    ref = estimate(trace_layers(model, (1, 28, 28)), spec)
    got = estimate_arch("lenet5", spec, precision="binary", input_shape=(1, 28, 28))
    assert got["energy_uj"] == pytest.approx(ref["energy_uj"]) and got["crossbars"] == ref["crossbars"]


def test_option_b_slices_and_extracts():
    torch.manual_seed(0)
    big = build_model("resnet20", in_channels=3, num_classes=10, image_size=8, width_mult=2, precision="binary",
                      shortcut="B").eval()
    widths = [w + 4 * (i % 3) for i, w in enumerate(big.base_widths)]
    small = build_model("resnet20", in_channels=3, num_classes=10, image_size=8, widths=widths,
                        precision="binary", shortcut="B")
    assert sum(n.endswith(".shortcut_conv") for n, _ in small.named_modules()) == 2
    sup = SuperNet(big, r_max=2.0, d=4)
    sub = sup.extract_subnet(widths).eval()
    big.set_widths(widths)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(big(x), sub(x))
    assert [g.in_channels for g in trace_layers(big, (3, 8, 8))] == \
        [g.in_channels for g in trace_layers(sub, (3, 8, 8))]


def test_cli_energy_mnsim_network(capsys):
    from cimnas.cli import main

    argv = ["energy", "--model", "resnet20", "--width-mult", "2", "--shortcut", "B", "--no-topology-mod",
            "--set", "spec.signed_inputs=true", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["energy_uj"] == pytest.approx(mnsim_resnet20(2, "w2a2")["energy_uj"]) and d["arrays"] == 122
    assert main(["energy", "--bits", "8", "--no-topology-mod"]) == 2  # one-line error, no traceback
    assert "--no-topology-mod" in capsys.readouterr().err
