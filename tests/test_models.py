"""Model zoo: shapes for every input size, widths, named architectures, counting, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.nn.counting import count_ops, trace_layers
from cimnas.nn.layers import QConv2d
from cimnas.nn.models import build_model, load_model, named_widths, rebuild_model, save_model_checkpoint


def resnet20(**kw):
    return build_model("resnet20", in_channels=3, num_classes=10, image_size=kw.pop("image_size", 32), seed=0, **kw)


@pytest.mark.parametrize("name", ["resnet20", "lenet5", "mlp"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 20, 12)])
def test_any_input_size(name, shape):
    m = build_model(name, in_channels=shape[0], num_classes=7, image_size=list(shape[1:]), seed=0)
    assert m(torch.rand(2, *shape)).shape == (2, 7)


def test_resnet18_imagenet_stems():
    std = build_model("resnet18", in_channels=3, num_classes=10, image_size=32, seed=0)
    assert std.stem == "standard" and std.conv1.out_channels == 64 and std.conv1.kernel_size == (7, 7)
    hw = build_model("resnet18", in_channels=3, num_classes=10, image_size=32, precision="binary", seed=0)
    assert hw.stem == "hawis" and hw.conv1.out_channels == 96 and hw.conv_extra.out_channels == 64
    assert len(hw.base_widths) == 17 and len(std.base_widths) == 17
    # binary: max-pool removed, the extra 3x3 conv takes stride 2 -> same feature-map sizes
    assert hw.conv_extra.stride == (2, 2)
    geo = {g.name: g for g in trace_layers(hw, (3, 32, 32))}
    assert geo["blocks.0.conv1"].in_hw == (8, 8)
    # downsampling blocks have 1x1 conv shortcuts, binarized too
    assert hw.blocks[2].shortcut_conv.kernel_size == (1, 1)
    assert hw.blocks[2].shortcut_conv.weight_quantizer.bits == 1


def test_resnet20_float_macs_hand_count():
    # stem 3*16*9*32*32; stage 1: 6 convs 16*16*9*32*32; stage 2: 16*32*9*16*16 + 5*32*32*9*16*16;
    # stage 3: 32*64*9*8*8 + 5*64*64*9*8*8; FC 64*10
    hand = (3 * 16 * 9 * 1024 + 6 * 16 * 16 * 9 * 1024 + 16 * 32 * 9 * 256 + 5 * 32 * 32 * 9 * 256
            + 32 * 64 * 9 * 64 + 5 * 64 * 64 * 9 * 64 + 64 * 10)
    assert hand == 40_551_040  # ~40.6 M MACs (the often-quoted ~40.8 M adds BN/shortcut ops)
    ops = count_ops(trace_layers(resnet20(), (3, 32, 32)))
    assert ops["flops"] == hand and ops["biops"] == 0
    # conv/FC weights only (BN and FC bias are not crossbar weights)
    assert ops["params"] == (3 * 16 * 9 + 6 * 16 * 16 * 9 + 16 * 32 * 9 + 5 * 32 * 32 * 9 + 32 * 64 * 9
                             + 5 * 64 * 64 * 9 + 64 * 10) == 268_336


def test_binary_reports_zero_flops_and_float_zero_biops():
    b = count_ops(trace_layers(resnet20(precision="binary"), (3, 32, 32)))
    f = count_ops(trace_layers(resnet20(), (3, 32, 32)))
    assert b["flops"] == 0 and b["biops"] > 0
    assert f["biops"] == 0 and f["flops"] > 0
    # the binary form differs only by the flattened classifier (TM): 64*8*8*10 instead of 64*10
    assert b["biops"] - f["flops"] == 64 * 64 * 10 - 64 * 10
    k = count_ops(trace_layers(resnet20(precision="kbit", bits=8), (3, 32, 32)))
    assert k["biops"] == 0 and k["flops"] == f["flops"]


def test_width_validation_errors():
    with pytest.raises(CimnasError, match="expects 19 widths"):
        resnet20(widths=[16] * 5)
    with pytest.raises(CimnasError, match="positive integer"):
        resnet20(widths=[16] * 18 + [0])
    with pytest.raises(CimnasError, match="positive integer"):
        resnet20(widths=[16] * 18 + [2.5])
    m = resnet20(image_size=8)
    with pytest.raises(CimnasError, match="expects 19 widths"):
        m.set_widths([16] * 20)
    with pytest.raises(CimnasError, match="exceeds the built width"):
        m.set_widths([17] + [16] * 18)
    with pytest.raises(CimnasError, match="width_mult"):
        resnet20(width_mult=-1.0)


def test_named_and_uniform_widths():
    a = named_widths("resnet20", "hawis-a")
    assert a == [64] + [80] * 6 + [112] * 6 + [216, 216, 216, 216, 208, 216]
    assert len(named_widths("resnet20", "hawis-b")) == 19
    assert named_widths("resnet18", "hawis-a") == [256] * 5 + [448] * 4 + [896] * 4 + [1344] * 4
    m = resnet20(widths="hawis-a", image_size=8)
    assert m.widths == a
    assert [mod.out_channels for mod in m.modules() if isinstance(mod, QConv2d)] == a
    assert m.arch_meta["widths"] == "hawis-a"
    with pytest.raises(CimnasError, match="no named architecture"):
        resnet20(widths="hawis-z")
    u3 = resnet20(width_mult=3, image_size=8)
    assert u3.widths == [48] + [48] * 6 + [96] * 6 + [192] * 6
    assert u3.base_widths == [16] * 7 + [32] * 6 + [64] * 6
    assert build_model("mlp", in_channels=1, num_classes=3, image_size=8, hidden_sizes=[10, 5],
                       width_mult=1.5).widths == [15, 8]


def test_bad_names_and_options():
    with pytest.raises(CimnasError, match="unknown model 'resnet21'.*resnet20"):
        build_model("resnet21", in_channels=3, num_classes=10, image_size=32)
    with pytest.raises(CimnasError, match="unknown precision"):
        resnet20(precision="ternary")
    with pytest.raises(CimnasError, match="has no option"):
        resnet20(depth=3)
    with pytest.raises(CimnasError, match="only to precision='binary'"):
        resnet20(refactor={"thermometer": True})
    with pytest.raises(CimnasError, match="unknown activation"):
        build_model("mlp", in_channels=1, num_classes=3, image_size=8, activation="swish")
    with pytest.raises(CimnasError, match="bits"):
        resnet20(precision="kbit", bits=0)
    with pytest.raises(CimnasError, match="image_size"):
        resnet20(image_size=0)
    with pytest.raises(CimnasError, match="too small"):
        build_model("lenet5", in_channels=1, num_classes=3, image_size=1)


def test_seeded_build_is_deterministic():
    a, b = resnet20(image_size=8), resnet20(image_size=8)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    c = build_model("resnet20", in_channels=3, num_classes=10, image_size=8, seed=1)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_arch_meta_is_plain_json_and_rebuilds():
    m = resnet20(image_size=8, precision="binary", widths="hawis-b", refactor={"thermometer": True})
    meta = json.loads(json.dumps(m.arch_meta))
    assert meta["refactor"]["thermometer"] is True and meta["precision"] == "binary"
    r = rebuild_model(meta)
    assert r.conv1.in_channels == 96 and r.widths == named_widths("resnet20", "hawis-b")
    with pytest.raises(CimnasError, match="lacks"):
        rebuild_model({"name": "resnet20"})


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    m = resnet20(image_size=8, precision="binary", widths=[8] * 19).eval()
    ds = {"name": "synthetic", "in_channels": 3, "image_size": 8, "num_classes": 10}
    path = tmp_path / "ckpt.pt"
    save_model_checkpoint(path, m, ds, config={"a": 1}, epoch=3, optimizer_state=None, metrics={"acc": 0.5})
    loaded, ckpt = load_model(path)
    assert ckpt["epoch"] == 3 and ckpt["metrics"] == {"acc": 0.5} and ckpt["dataset"] == ds
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), m(x))
    # state dict that does not fit the stored architecture
    from cimnas.utils.io import load_checkpoint, save_checkpoint

    bad = load_checkpoint(path)
    bad["arch"]["widths"] = [9] * 19
    save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(CimnasError, match="does not match"):
        load_model(tmp_path / "bad.pt")
    save_checkpoint(tmp_path / "foreign.pt", {"weights": torch.zeros(2)})
    with pytest.raises(CimnasError, match="not a cimnas-checkpoint-v2"):
        load_model(tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CimnasError):
        load_model(tmp_path / "corrupt.pt")


def test_models_command_lists_models(capsys):
    from cimnas.cli import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {"resnet20", "resnet32", "resnet56", "resnet110", "resnet18", "lenet5", "mlp"} <= set(by_name)
    assert by_name["resnet20"]["named_widths"]["hawis-a"][0] == 64
    assert main(["models"]) == 0
    assert "hawis-b" in capsys.readouterr().out
