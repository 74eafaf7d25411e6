"""Device models inside the Monte-Carlo path: the ideal path bit for bit, the per-tile dataflow, the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from tests.test_montecarlo import setup

from cimnas.cli import main
from cimnas.hardware.aging import accuracy_over_time, chip_models, parse_time
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.dataflow import tile_forward
from cimnas.hardware.defects import DefectConfig
from cimnas.hardware.devices import load_device
from cimnas.hardware.mapping import map_layer
from cimnas.hardware.montecarlo import evaluate_trials
from cimnas.hardware.periphery import PeripheryConfig
from cimnas.nn.layers import QConv2d
from cimnas.nn.models import build_model, save_model_checkpoint
from cimnas.nn.quantizers import DoReFaActivation, DoReFaWeight


def test_ideal_device_path_gives_todays_results_bit_for_bit():
    net, split = setup()
    spec = CrossbarSpec()
    d = DefectConfig(sa1_rate=0.05, variation_sigma=0.2)
    today = evaluate_trials(net, split, spec, d, trials=4, seed=7, batch_size=32)
    ideal = load_device("ideal")
    assert [type(m) for m in chip_models(ideal, 3600.0, True, d)] == [type(m) for m in d.build()]
    same = evaluate_trials(net, split, spec, chip_models(ideal, 3600.0, True, d), trials=4, seed=7, batch_size=32,
                           periphery=ideal.periphery)
    assert same.accs == today.accs
    over = accuracy_over_time({"m": net}, split, spec, ideal, [("0", 0.0), ("1y", 3.15e7)], 4, 7, defects=d,
                              batch_size=32)
    assert [r["models"]["m"]["uncompensated"]["accs"] for r in over["times"]] == [today.accs, today.accs]


def test_device_trials_are_reproducible_and_drift_compensation_helps():
    net, split = setup()
    pcm = load_device("pcm-joshi2020")
    res = accuracy_over_time({"m": net}, split, CrossbarSpec(), pcm, [("0", 0.0), ("1y", 3.15e7)], 3, 0,
                             batch_size=32)
    again = accuracy_over_time({"m": net}, split, CrossbarSpec(), pcm, [("0", 0.0), ("1y", 3.15e7)], 3, 0,
                               batch_size=32)
    assert res["times"] == again["times"]
    t0, t1 = (r["models"]["m"] for r in res["times"])
    assert t0["compensated"]["accs"] == t0["uncompensated"]["accs"]  # at t = 0 nothing has drifted
    assert t1["compensated"]["mean"] >= t1["uncompensated"]["mean"]


@pytest.mark.parametrize("bpc,sub", [(1, "analog"), (2, "analog"), (2, "digital")])
def test_tile_dataflow_equals_the_convolution_when_exact(bpc, sub):
    # 40 input channels -> 2 row tiles of 28 / 12 channels; 4-bit weights over 4 / 2 slices; 4-bit inputs
    spec = CrossbarSpec(bits_per_cell=bpc, adc_bits=8)
    torch.manual_seed(0)
    lay = QConv2d(40, 6, 3, weight_quantizer=DoReFaWeight(4), input_quantizer=DoReFaActivation(4)).eval()
    ml = map_layer("c", lay, spec)
    x = torch.rand(2, 40, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = lay(x)
        y = tile_forward(ml, ml.g_pos, ml.g_neg, x, PeripheryConfig(mode="tile", subtraction=sub))
    assert torch.allclose(y, ref, atol=1e-4)
    # the loop reference (digital subtraction, unrolled inputs) agrees with an ADC in the loop
    codes, xs = lay.input_quantizer.to_integer(x)
    cols = F.unfold(codes, 3, padding=1).transpose(1, 2).reshape(-1, 360)
    ref_int = ml.crossbar_forward(cols, adc=True).reshape(2, 25, 6).permute(0, 2, 1).reshape(2, 6, 5, 5)
    assert torch.allclose(ref_int.float() * ml.scale * xs, ref, atol=1e-4)
    # an ADC with a low full scale saturates and the result moves
    with torch.no_grad():
        y_sat = tile_forward(ml, ml.g_pos, ml.g_neg, x, PeripheryConfig(mode="tile", adc_bits=3, adc_full_scale=3.0,
                                                                          rows_per_read=128, subtraction=sub))
    assert not torch.allclose(y_sat, ref, atol=1e-2)


def test_tile_mode_monte_carlo_with_ideal_devices_is_clean():
    net, split = setup()
    r = evaluate_trials(net, split, CrossbarSpec(), [], trials=2, seed=0, batch_size=32,
                        periphery=PeripheryConfig(mode="tile"))
    assert r.accs == [1.0, 1.0]


def test_parse_time():
    assert parse_time("0") == 0 and parse_time("1h") == 3600 and parse_time("2d") == 172800
    assert parse_time("1y") == 365 * 86400


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "m.pt"
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8, precision="binary", seed=0)
    save_model_checkpoint(path, model, {"name": "digits", "in_channels": 1, "image_size": 8, "num_classes": 10})
    return str(path)


def test_cli_devices_and_over_time_json(capsys, ckpt, tmp_path):
    assert main(["devices"]) == 0
    listed = yaml.safe_load(capsys.readouterr().out)  # the listing is YAML: preset -> device / periphery fields
    assert listed["reram-wan2022"]["device"]["read_sigma"] == 0.01 and "periphery" in listed["pcm-joshi2020"]
    assert main(["devices", "pcm-joshi2020"]) == 0 and yaml.safe_load(capsys.readouterr().out)["sources"]
    out = tmp_path / "o"
    code = main(["robustness", "--checkpoint", ckpt, "--device-model", "pcm-joshi2020", "--time", "0,1d",
                 "--trials", "2", "--max-samples", "64", "--json", "--out", str(out)])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["time"] for r in rows] == ["0", "1d"]
    assert set(rows[0]["models"]["m"] if "m" in rows[0]["models"] else next(iter(rows[0]["models"].values()))) == {
        "uncompensated", "compensated"}
    assert (out / "over_time.json").is_file() and (out / "over_time.png").is_file()


@pytest.mark.parametrize("extra", [
    ["--device-model", "nope"], ["--device-model", "pcm-joshi2020", "--time=-1h"],
    ["--device-model", "pcm-joshi2020", "--time", "1x"], ["--device-model", "pcm-joshi2020", "--time", "inf"],
    ["--device-model", "pcm-joshi2020", "--device-set", "device.read_sigma=-1"],
    ["--device-model", "pcm-joshi2020", "--device-set", "device.drift_nu_std=nan"],
    ["--device-model", "pcm-joshi2020", "--device-set", "periphery.adc_bits=0"],
    ["--device-model", "pcm-joshi2020", "--device-set", "device.colour=red"],
    ["--time", "1h"], ["--device-file", "BINARY"],
])
def test_cli_bad_device_input(capsys, ckpt, tmp_path, extra):
    binary = tmp_path / "dev.yaml"
    binary.write_bytes(b"\x00\x01\x02")
    out = tmp_path / "out"
    argv = ["robustness", "--checkpoint", ckpt, "--out", str(out)] + [str(binary) if e == "BINARY" else e
                                                                      for e in extra]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cimnas: error:") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_batched_trials_with_per_read_noise_equal_one_by_one():
    net, split = setup()
    reram = load_device("reram-wan2022", ["device.read_sigma=0.3"])  # strong read noise: reads matter
    models = chip_models(reram, 86400.0, False)
    one = evaluate_trials(net, split, CrossbarSpec(), models, trials=4, seed=3, batch_size=32, trial_batch=1)
    batched = evaluate_trials(net, split, CrossbarSpec(), models, trials=4, seed=3, batch_size=32, trial_batch=4)
    assert batched.accs == one.accs and len(set(one.accs)) > 1
