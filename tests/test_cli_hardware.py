"""`cimnas energy`, `cimnas robustness`, `cimnas presets` end to end (tiny models, bundled digits)."""

import json

import pytest

from cimnas.cli import main
from cimnas.nn.models import build_model, save_model_checkpoint

DIGITS = {"name": "digits", "in_channels": 1, "image_size": 8, "num_classes": 10}


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_energy_json(capsys):
    code, out, _ = run(capsys, "energy", "--model", "resnet20", "--width-mult", "2", "--bits", "1", "--json")
    assert code == 0
    d = json.loads(out)
    for k in ("energy_uj", "latency_us", "area_mm2", "crossbars", "biops", "flops", "layers"):
        assert k in d
    assert len(d["layers"]) == 20 and d["flops"] == 0 and d["biops"] > 0
    for k in ("name", "in_channels", "out_channels", "kernel_size", "utilization", "energy_uj", "crossbars"):
        assert k in d["layers"][0]
    assert d["energy_uj"] == pytest.approx(sum(r["energy_uj"] for r in d["layers"]))


def test_energy_widths_arch_and_table(capsys, tmp_path):
    w = [64] + [80] * 6 + [112] * 6 + [216] * 6
    arch = tmp_path / "best_arch.json"
    arch.write_text(json.dumps({"widths": w}))
    code, out, _ = run(capsys, "energy", "--arch", str(arch), "--json")
    assert code == 0
    layers = json.loads(out)["layers"]
    assert [r["crossbars"] for r in layers[7:13]][1:] == [4] * 5  # 112 -> 112 3x3 convs: 4 crossbars
    code2, out2, _ = run(capsys, "energy", "--widths", ",".join(map(str, w)), "--json")
    assert json.loads(out2)["energy_uj"] == pytest.approx(json.loads(out)["energy_uj"])
    code3, out3, _ = run(capsys, "energy", "--width-mult", "1")
    assert code3 == 0 and "total: energy" in out3


@pytest.mark.parametrize("argv", [
    ["energy", "--widths", "16,16"],
    ["energy", "--preset", "nope"],
    ["energy", "--set", "spec.rows=1"],
    ["energy", "--bits", "8", "--set", "spec.bits_per_cell=3"],
    ["energy", "--input-shape", "3x32"],
])
def test_energy_bad_input(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("cimnas: error:") and len(err.strip().splitlines()) == 1


def test_energy_bad_arch_file(capsys, tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text(json.dumps({"widths": [16, 16, 16]}))
    code, _, err = run(capsys, "energy", "--arch", str(bad))
    assert code == 2 and "does not fit" in err


def test_presets(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0 and "mnsim-default" in out and "hawis-tolerance" in out


@pytest.fixture
def ckpt(tmp_path):
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8, precision="binary", seed=0)
    path = tmp_path / "m.pt"
    save_model_checkpoint(path, model, DIGITS)
    return path


def test_robustness_json(capsys, ckpt):
    code, out, _ = run(capsys, "robustness", "--checkpoint", str(ckpt), "--sa1", "0.1", "--trials", "3",
                       "--max-samples", "100", "--json")
    assert code == 0
    r = next(iter(json.loads(out)["models"].values()))
    assert len(r["accs"]) == 3 and r["min"] <= r["p5"] <= r["mean"] <= r["max"]


def test_robustness_sweep_writes_json_and_png(capsys, ckpt, tmp_path):
    out_dir = tmp_path / "sweep"
    argv = ["robustness", "--checkpoint", str(ckpt), "--checkpoint", str(ckpt), "--labels", "a,b", "--sweep",
            "--sa0-levels", "0,0.1", "--sa1-levels", "0,0.2", "--sigma-levels", "0,0.5", "--trials", "2",
            "--max-samples", "64", "--out", str(out_dir)]
    code, _, _ = run(capsys, *argv)
    assert code == 0
    res = json.loads((out_dir / "robustness.json").read_text())
    assert set(res["kinds"]) == {"sa0", "sa1", "variation"} and set(res["kinds"]["sa0"]["models"]) == {"a", "b"}
    assert (out_dir / "robustness.png").stat().st_size > 1000
    before = (out_dir / "robustness.json").read_bytes()
    code, _, err = run(capsys, *argv)  # existing results are never overwritten
    assert code == 2 and "exists" in err and (out_dir / "robustness.json").read_bytes() == before


@pytest.mark.parametrize("extra", [["--sa0", "1.5"], ["--sa1", "-0.1"], ["--sigma", "-1"], ["--trials", "0"],
                                   ["--gaussian", "0.1", "--mode", "weird"], ["--preset", "nope"],
                                   ["--max-samples", "-5"], ["--gaussian", "inf"], ["--sigma", "nan"],
                                   ["--trials", "1000000000000"], ["--batch-size", "0"]])
def test_robustness_bad_input(capsys, ckpt, extra):
    code, _, err = run(capsys, "robustness", "--checkpoint", str(ckpt), *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1
    if extra[0] == "--trials" and extra[1] != "0":  # the work estimate and how to raise the limit
        assert "CIMNAS_MAX_MC_WORK=" in err


def test_robustness_gaussian_weight_noise(capsys, ckpt):
    # the UAE noise through the robustness command: the gaussian defect on the mapped crossbars
    code, out, _ = run(capsys, "robustness", "--checkpoint", str(ckpt), "--gaussian", "0.5", "--trials", "3",
                       "--json")
    assert code == 0
    r = json.loads(out)["models"]
    (res,) = r.values()
    assert len(res["accs"]) == 3 and res["n"] == 3 and "p5" in res and "median" in res
