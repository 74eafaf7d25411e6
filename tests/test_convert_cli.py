"""Outside models on the command line: --model-file / --model torchvision:NAME / timm:NAME in energy, robustness,
train and uae analyze; bad input is one line, exit 2, nothing on disk changed. torchvision and timm are stand-in
modules here (monkeypatched sys.modules): the real packages are optional extras pinned to our torch."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from cimnas.cli import main
from cimnas.nn.models import load_model

ZOO = Path(__file__).parent / "zoo_models.py"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def tiny_net(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chans, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


@pytest.fixture
def fake_extras(monkeypatch):
    """torchvision.models and timm stand-ins with one model each."""
    tv = types.ModuleType("torchvision")
    tvm = types.ModuleType("torchvision.models")
    tvm.list_models = lambda: ["tinynet"]
    tvm.get_model = lambda name, weights=None, num_classes=1000: tiny_net(num_classes)
    tv.models = tvm
    timm = types.ModuleType("timm")
    timm.is_model = lambda name: name == "tinynet"
    timm.create_model = lambda name, pretrained=False, num_classes=1000, in_chans=3: tiny_net(num_classes, in_chans)
    for name, mod in (("torchvision", tv), ("torchvision.models", tvm), ("timm", timm)):
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_by_name_through_a_stand_in(capsys, fake_extras, kind):
    code, out, _ = run(capsys, "energy", "--model", f"{kind}:tinynet", "--json")
    d = json.loads(out)
    assert code == 0 and [r["name"] for r in d["layers"]] == ["0", "4"] and d["energy_uj"] > 0
    assert f"{kind} has no model 'resnet999'" in one_line_error(capsys, "energy", "--model", f"{kind}:resnet999")


def test_missing_extra_names_the_pair_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision.models", None)  # import fails as for a missing package
    msg = one_line_error(capsys, "energy", "--model", "torchvision:resnet18")
    assert "torchvision 0.28.x" in msg and f"torch {torch.__version__}" in msg


def test_energy_reports_digital_layers(capsys):
    code, out, _ = run(capsys, "energy", "--model-file", f"{ZOO}:mobilenet_v2", "--keep-digital", "first,last",
                       "--rule", "*.conv.3=kbit:4", "--input-shape", "3x16x16", "--json")
    d = json.loads(out)
    assert code == 0 and d["conversion"]["digital"] == ["0", "18"]
    assert {r["name"] for r in d["layers"]}.isdisjoint({"0", "18"}) and len(d["layers"]) == 27
    assert {d["conversion"]["precision"][n] for n in d["conversion"]["precision"] if n.endswith("conv.3")} == {"kbit:4"}
    code, out, _ = run(capsys, "energy", "--model-file", f"{ZOO}:mlp", "--input-shape", "1x8x8", "--keep-digital",
                       "first")
    assert code == 0 and "digital (off the crossbars, not in these totals): '1'" in out


def test_bad_input_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    text = tmp_path / "notes.py"
    text.write_bytes(b"\x00\x01binary")
    torch.save({"x.weight": torch.zeros(2)}, tmp_path / "w.pt")
    cases = [
        (["--model-file", f"{ZOO}:raises"], "raised ValueError: the factory failed on purpose"),
        (["--model-file", f"{ZOO}:not_a_model"], "returned a int, not a torch.nn.Module"),
        (["--model-file", f"{ZOO}:nothere"], "has no function 'nothere'"),
        (["--model-file", f"{bad}:f"], "is not valid Python"),
        (["--model-file", f"{text}:f"], "is not valid Python (source code string cannot contain null bytes)"),
        (["--model-file", f"{tmp_path}/missing.py:f"], "not found"),
        (["--model-file", "README.md"], "takes PATH.py:FACTORY"),
        (["--model-file", f"{ZOO}:vgg11_bn", "--input-shape", "3x8x8"], "rejects an input of shape 3x8x8"),
        (["--model-file", f"{ZOO}:mlp", "--weights", tmp_path / "w.pt"], "does not fit the model"),
        (["--model-file", f"{ZOO}:mlp", "--rule", "nothing=binary"], "matches no layer"),
        (["--model-file", f"{ZOO}:mlp", "--widths", "4,4"], "apply to cimnas models only"),
        (["--model", "resnet20", "--rule", "*=kbit"], "apply to --model-file"),
        (["--model-file", f"{ZOO}:tiny_vit"], "module 'attn' computes a matmul"),
        (["--model-file", f"{ZOO}:with_conv_transpose"], "ConvTranspose2d"),
    ]
    before = sorted(tmp_path.iterdir())
    for argv, message in cases:
        assert message in one_line_error(capsys, "energy", *argv), argv
    # the commands that write run folders refuse before creating one
    raising = ["--model-file", f"{ZOO}:raises"]
    one_line_error(capsys, "train", *raising, "--set", "data.name=digits", "--out", tmp_path / "t")
    one_line_error(capsys, "uae", "analyze", *raising, "--dataset", "digits", "--out", tmp_path / "u")
    one_line_error(capsys, "uae", "analyze", "--model-file", f"{ZOO}:vgg11_bn", "--dataset", "digits", "--out",
                   tmp_path / "u")  # 8x8 digits are too small for VGG-11's five pools
    assert sorted(tmp_path.iterdir()) == before


def test_train_robustness_and_analyze_on_an_outside_model(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--model-file", f"{ZOO}:mlp", "--precision", "kbit",
                            "--keep-digital", "first", "--noise-sigma", "0.02", "--set", "data.name=digits",
                            "--set", "train.epochs=1", "--set", "train.lr=0.05", "--out", out)
    assert code == 0, err
    ckpt = out / "checkpoints" / "checkpoint.pt"
    model, payload = load_model(ckpt, model_file=f"{ZOO}:mlp")
    assert payload["arch"]["conversion"]["layers"] == {"1": "digital", "3": "kbit:8", "5": "kbit:8"}
    assert payload["config"]["noise"]["gaussian_sigma"] == 0.02
    argv = ["robustness", "--checkpoint", ckpt, "--model-file", f"{ZOO}:mlp", "--sigma", "0.3", "--trials", "3",
            "--max-samples", "100", "--json"]
    code, first, _ = run(capsys, *argv)
    code2, second, _ = run(capsys, *argv)
    assert code == code2 == 0 and json.loads(first)["models"] == json.loads(second)["models"]
    msg = one_line_error(capsys, "robustness", "--checkpoint", ckpt, "--trials", "1")
    assert "pass --model-file" in msg
    # the train run refuses a second start in the same folder without touching it
    listing = sorted(p.name for p in out.rglob("*"))
    one_line_error(capsys, "train", "--model-file", f"{ZOO}:mlp", "--set", "data.name=digits", "--out", out)
    assert sorted(p.name for p in out.rglob("*")) == listing
    code, stdout, err = run(capsys, "uae", "analyze", "--model-file", f"{ZOO}:mlp", "--dataset", "digits",
                            "--checkpoint", ckpt, "--samples", "50", "--out", tmp_path / "uae", "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert len(res["chi2"]) == 10 and res["checkpoint"] == str(ckpt)


def test_plain_state_dict_counts_as_a_checkpoint(capsys, tmp_path):
    sys.path.insert(0, str(ZOO.parent))
    try:
        import zoo_models
    finally:
        sys.path.remove(str(ZOO.parent))
    torch.manual_seed(0)
    torch.save(zoo_models.mlp(10, 1, 8).state_dict(), tmp_path / "sd.pt")
    code, out, err = run(capsys, "robustness", "--checkpoint", tmp_path / "sd.pt", "--model-file", f"{ZOO}:mlp",
                         "--dataset", "digits", "--precision", "kbit", "--trials", "2", "--sigma", "0.1",
                         "--max-samples", "50", "--json")
    assert code == 0, err
    assert [r["n"] for r in json.loads(out)["models"].values()] == [2]
    assert "name the dataset" in one_line_error(capsys, "robustness", "--checkpoint", tmp_path / "sd.pt",
                                                "--model-file", f"{ZOO}:mlp", "--trials", "1")
