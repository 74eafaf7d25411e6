"""The integer residual path on a model defined outside cimnas (examples/plain_resnet.py, converted with
`cimnas.convert(..., refactor=...)`): streams found by tracing, export == simulate, the re-factorization."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cimnas.deploy.fixed_point import FixedAffine, Saturate, fixed_residual_model, integer_kind
from cimnas.deploy.streams import trace_streams
from cimnas.errors import CimnasError
from cimnas.nn.convert import apply_recipe, convert
from cimnas.nn.fusion import fuse_model
from cimnas.nn.quantizers import BinaryActivation
from cimnas.nn.refactor import ACTIVATION_TYPES, AVGPOOL_TYPES, ThermometerInput
from deploy_kit import SCALE, as_codes, calibrate, pixels, tiny_model, tiny_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_resnet.py"
SHAPE = (1, 8, 8)
REFACTOR = {"thermometer": True, "thermometer_levels": 3}


def _example():
    spec = importlib.util.spec_from_file_location("plain_resnet_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def converted(width: int = 4, seed: int = 0, refactor=REFACTOR) -> nn.Module:
    """The example's ResNet-8 at `width` (stages w, 2w, 4w; 1x1 conv + BN shortcuts), converted fully binary and
    re-factorized, BN statistics from random data."""
    torch.manual_seed(seed)
    model = _example().ResNet(1, width, 10, 1)
    convert(model, default="binary", input_shape=SHAPE, refactor=refactor)
    model.input_shape = SHAPE
    return calibrate(model, seed)


def test_refactor_removes_what_blocks_binarization():
    """No activation module is left, the avg-pool before the classifier is gone (classifier C*H*W inputs), every
    conv / FC is binary (the first thermometer-coded) and every BN that feeds a binarized layer alone becomes a
    comparator: no ReLU stands between a BN and a binarizer."""
    model = converted()
    assert not any(isinstance(m, ACTIVATION_TYPES + AVGPOOL_TYPES) for m in model.modules())
    assert model.fc.in_features == 16 * 2 * 2  # 4w channels at 8 / 4 = 2 x 2
    assert integer_kind(model) == "binary"
    assert isinstance(model.conv1.input_quantizer, ThermometerInput)
    assert isinstance(model.layers[0].conv1.input_quantizer, BinaryActivation)
    fused = fuse_model(model)
    kinds = {n: type(m).__name__ for n, m in fused.named_modules() if n.endswith((".bn1", "shortcut.1", "bn2"))}
    assert {k: v for k, v in kinds.items() if k.endswith(".bn1")} == {
        f"layers.{i}.bn1": "ThresholdComparator" for i in range(3)}
    assert all(v == "IntegerAffine" for k, v in kinds.items() if not k.endswith(".bn1"))
    assert model.cimnas_conversion.to_dict()["refactor"]["thermometer_levels"] == 3


def test_refactor_recipe_rebuilds_the_same_model():
    """The recipe in the checkpoint re-applies the re-factorization: a fresh model takes the state_dict (strict)
    and computes the same outputs."""
    model = converted()
    again = _example().ResNet(1, 4, 10, 1)
    apply_recipe(again, model.cimnas_conversion.to_dict(), SHAPE)
    again.load_state_dict(model.state_dict(), strict=True)
    x = pixels(8) / SCALE
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model.eval()(x))


def test_refactor_leaves_a_model_with_nothing_to_refactor_unchanged():
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(256, 10))

    a, b = build(), build()
    convert(a, input_shape=SHAPE)
    convert(b, input_shape=SHAPE, refactor=True)
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    x = pixels(4) / SCALE
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_refactor_keeps_digital_subtrees_and_refuses_functional_activations():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    with pytest.raises(CimnasError, match="applies relu as a function call") as e:
        convert(Functional(), input_shape=SHAPE, refactor=True)
    assert "\n" not in str(e.value)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    convert(model, {"0": "digital"}, input_shape=SHAPE, refactor=True)
    assert isinstance(model[0][1], nn.ReLU) and isinstance(model[2], nn.Identity)


def test_streams_come_from_the_graph():
    """Segments (terms joined by adds) and readers, derived by hand from the structure: the converted model's
    option-B shortcuts start a new segment per stage; the zoo ResNet-20's option A keeps one segment."""
    model = converted()
    sg = trace_streams(fuse_model(model), SHAPE)
    assert sg.segments == [["bn1", "layers.0.bn2"], ["layers.1.bn2", "layers.1.shortcut.1"],
                           ["layers.2.bn2", "layers.2.shortcut.1"]]
    # a block reads the stream the blocks before it built; its shortcut's term starts the next segment
    assert sg.reader_segment == {"layers.0.conv1": 0, "layers.1.conv1": 0, "layers.1.shortcut.0": 0,
                                 "layers.2.conv1": 1, "layers.2.shortcut.0": 1, "fc": 2}
    assert sg.readers["fc"].flat and sg.readers["fc"].positions == 4 and len(sg.adds) == 3
    zoo = tiny_model("resnet-A")
    sg = trace_streams(fuse_model(zoo), tuple(zoo.input_shape))
    assert sg.segments == [["bn1"] + [f"blocks.{k}.bn2" for k in range(9)]] and len(sg.adds) == 9
    zoo_b = trace_streams(fuse_model(tiny_model("resnet-B")), SHAPE)
    assert [s[:2] for s in zoo_b.segments[1:]] == [["blocks.3.bn2", "blocks.3.shortcut_bn"],
                                                   ["blocks.6.bn2", "blocks.6.shortcut_bn"]]


def test_wide_streams_equal_the_float_residual_model():
    """At 32 bits the rounding of the streams (2^-(F+1), F about 25) flips no binarizer: the same predictions as
    the float-residual fused model, and each stream is its float value to within one rounding step."""
    model = converted()
    x = pixels(64, seed=3) / SCALE
    fixed, plan = fixed_residual_model(model, 32, 4.0)
    with torch.no_grad():
        ref = fuse_model(model).double()(x.double()).argmax(1)
        got = fixed(x).argmax(1)
    assert torch.equal(ref, got) and len(ref.unique()) > 1
    assert [len(s["writers"]) for s in plan["segments"]] == [2, 2, 2]


def test_narrow_streams_saturate_as_the_bound_says():
    """The provable bound (sigmas None) never reaches the 6-bit limits; a range of 0.01 BN standard deviations
    does, and the saturated values stay within the B bits."""
    model = converted()
    x = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(0))
    for sigmas, hits in ((None, False), (0.01, True)):
        fixed, _ = fixed_residual_model(model, 6, sigmas)
        seen: list[torch.Tensor] = []
        for m in fixed.modules():
            if isinstance(m, Saturate | FixedAffine):
                m.register_forward_hook(lambda mod, i, o, seen=seen: seen.append(o))
        with torch.no_grad():
            fixed(x)
        peak = max(float(o.abs().max()) for o in seen)
        assert peak <= 2**5 and all(float(o.max()) <= 2**5 - 1 for o in seen)
        assert (peak >= 2**5 - 1) == hits


@pytest.mark.parametrize("bits", [6, 12])
def test_export_simulates_the_converted_model_bit_exactly(bits, tmp_path):
    from cimnas.deploy.fileformat import make_doc, read_export, write_export
    from cimnas.deploy.lower import lower, verify_export
    from cimnas.deploy.simulate import Chip

    model = converted(seed=1)
    ops, arrays = lower(model, bits, tiny_spec(), 4.0)
    assert sum(o["op"] == "add" for o in ops) == 3 and sum(o["op"] == "stream_code" for o in ops) == 4
    doc = make_doc({"kind": "binary", "residual_bits": bits, "range_sigmas": 4.0, "input_shape": list(SHAPE),
                    "crossbar": tiny_spec().to_dict()}, ops, arrays)
    verify_export(model, doc, arrays, tiny_spec())
    write_export(tmp_path, doc, arrays)
    doc, arrays, spec = read_export(tmp_path)
    x = pixels(32, seed=5)
    logits = Chip(doc, arrays, spec).run(as_codes(x), SCALE)
    with torch.no_grad():
        ref = fixed_residual_model(model, bits, 4.0)[0](x / SCALE)
    assert np.array_equal(logits, ref.numpy().astype(np.int64))


def test_what_the_tracer_cannot_place_is_one_line():
    """A stream read by an avg-pool (no topology modification), an add of a stream and a non-stream, and a
    forward torch.fx cannot trace: each a one-line CimnasError."""
    model = converted(refactor={**REFACTOR, "topology_mod": False})
    with pytest.raises(CimnasError, match="AdaptiveAvgPool2d 'pool'") as e:
        fixed_residual_model(model, 12)
    assert "\n" not in str(e.value)

    class Odd(nn.Module):
        def __init__(self, control_flow: bool):
            super().__init__()
            self.control_flow = control_flow
            self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            s = self.bn1(self.conv1(x))
            if self.control_flow and s.sum() > 0:
                s = s * 1
            s = s + self.bn2(self.conv2(s)) + self.conv2(s)  # the last term has no BN: not a residual term
            return self.fc(s.flatten(1))

    for control_flow, msg in ((False, "an add whose operands"), (True, "torch.fx")):
        odd = Odd(control_flow)
        convert(odd, input_shape=SHAPE)
        odd.input_shape = SHAPE
        with pytest.raises(CimnasError, match=msg) as e:
            fixed_residual_model(calibrate(odd), 12)
        assert "\n" not in str(e.value)


def test_model_refactor_is_for_outside_models_and_trains_through_the_pipeline():
    from cimnas.config import ModelConfig
    from cimnas.nn.models import model_payload, rebuild_model
    from cimnas.pipelines.hawis.config import HawisModelConfig
    from cimnas.pipelines.train import build_from_config

    with pytest.raises(CimnasError, match="outside models only"):
        ModelConfig(name="resnet20", refactor=True).validate()
    with pytest.raises(CimnasError, match="not wired into the HAWIS search"):
        HawisModelConfig(name=f"{EXAMPLE}:resnet8", refactor=True, thermometer=False).validate()
    cfg = ModelConfig(name=f"{EXAMPLE}:resnet8", refactor=True, thermometer=True, thermometer_levels=2)

    class Splits:
        in_channels, num_classes, image_size = 1, 10, 8

    model = build_from_config(cfg, Splits, seed=0)
    assert isinstance(model.conv1.input_quantizer, ThermometerInput) and model.fc.in_features == 256
    again = rebuild_model(model_payload(model)["arch"], model_file=f"{EXAMPLE}:resnet8")
    again.load_state_dict(model.state_dict(), strict=True)


def test_export_simulate_and_sweep_commands_take_the_model_file(tmp_path, capsys):
    """`cimnas export` / the sweep rebuild a converted model's checkpoint only from a named --model-file (one line
    otherwise, nothing written); export -> simulate then runs on digits."""
    from cimnas.cli import main
    from cimnas.deploy import sweep
    from cimnas.nn.models import save_model_checkpoint
    from cimnas.nn.zoo import external_model
    from faultkit import assert_one_line

    model = calibrate(external_model(f"{EXAMPLE}:resnet8", in_channels=1, num_classes=10, image_size=8,
                                     refactor=REFACTOR, seed=0))
    ckpt, out = tmp_path / "plain.pt", tmp_path / "export"
    save_model_checkpoint(ckpt, model, {"name": "digits", "in_channels": 1, "image_size": 8, "num_classes": 10})
    line = assert_one_line(main(["export", "--checkpoint", str(ckpt), "--out", str(out)]), capsys.readouterr().err)
    assert "--model-file" in line and not out.exists()
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--model-file", f"{EXAMPLE}:resnet8"]) == 0
    assert main(["simulate", str(out), "--max-samples", "16", "--json"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert sweep.main(["--checkpoint", str(ckpt), "--model-file", f"{EXAMPLE}:resnet8", "--bits", "22",
                       "--max-samples", "16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["bits"] == 22
