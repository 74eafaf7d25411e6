"""Integer residual path and export -> integer simulation == the fused PyTorch reference (tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimnas.deploy.fileformat import make_doc, read_export, write_export
from cimnas.deploy.fixed_point import (
    MULT_SHIFT,
    FixedAffine,
    Saturate,
    fixed_residual_model,
    integer_kind,
    stream_threshold,
)
from cimnas.deploy.lower import lower, verify_export
from cimnas.deploy.simulate import Chip, predict
from cimnas.nn.fusion import fuse_model
from deploy_kit import SCALE, as_codes, pixels, tiny_model, tiny_spec


def _export(model, tmp_path, bits=8, sigmas=4.0):
    ops, arrays = lower(model, bits, tiny_spec(), sigmas)
    doc = make_doc({"kind": integer_kind(model), "residual_bits": bits, "range_sigmas": sigmas,
                    "input_shape": list(model.input_shape), "crossbar": tiny_spec().to_dict()}, ops, arrays)
    verify_export(model, doc, arrays, tiny_spec())  # the exporter's own self-check passes
    write_export(tmp_path, doc, arrays)
    return read_export(tmp_path)


@pytest.mark.parametrize("name", ["resnet-A", "resnet-B", "lenet", "mlp", "mlp-nobn"])
@pytest.mark.parametrize("bits", [6, 12])
def test_simulated_export_equals_fused_reference(name, bits, tmp_path):
    model = tiny_model(name)
    x = pixels(48, seed=5)
    doc, arrays, spec = _export(model, tmp_path, bits)
    logits = np.concatenate([Chip(doc, arrays, spec).run(as_codes(x[i:i + 16]), SCALE) for i in range(0, 48, 16)])
    fixed, _ = fixed_residual_model(model, bits, 4.0)
    with torch.no_grad():
        ref = fixed(x / SCALE)
    assert np.array_equal(logits, ref.numpy().astype(np.int64))  # integer logits, bit for bit
    assert len(np.unique(logits.argmax(1))) > 1  # not a degenerate constant classifier


@pytest.mark.parametrize("name", ["kbit-mlp", "kbit-lenet"])
def test_kbit_export_equals_float64_model(name, tmp_path):
    """A k-bit chain (multi-bit inputs bit-serial through the DAC, weights over several cell slices) predicts as
    the k-bit model itself (in float64, so its own rounding cannot flip a level)."""
    model = tiny_model(name)
    x = pixels(48, seed=6)
    doc, arrays, spec = _export(model, tmp_path)
    assert any(op.get("slices", 1) > 1 for op in doc["ops"])
    pred = predict(Chip(doc, arrays, spec), as_codes(x), SCALE, batch_size=16)
    with torch.no_grad():
        ref = model.double()(x.double() / SCALE).argmax(1).numpy()
    assert np.array_equal(pred, ref)


def test_chain_models_equal_fuse_model(tmp_path):
    """No residual stream: the export predicts exactly as `fuse_model` (the integer logits only drop ties)."""
    model = tiny_model("lenet")
    x = pixels(48, seed=7)
    doc, arrays, spec = _export(model, tmp_path)
    with torch.no_grad():
        ref = fuse_model(model).double()(x.double() / SCALE).argmax(1).numpy()
    assert np.array_equal(predict(Chip(doc, arrays, spec), as_codes(x), SCALE), ref)


@pytest.mark.parametrize("f", range(-3, 7))
def test_stream_threshold_is_the_binarizer(f):
    """[X >= theta] == [X / 2^F > 1/2] for every integer X (hand rule of fixed_point)."""
    x = torch.arange(-200, 200)
    theta = stream_threshold(torch.tensor([f]))
    assert torch.equal(x >= theta, x.double() / 2.0**f > 0.5)


def test_requant_rounds_to_nearest():
    """floor((M Z + N) / 2^R) is a * Z * 2^F + b * 2^F rounded, off by at most the multiplier's rounding."""
    g = torch.Generator().manual_seed(0)
    a, b, f = torch.randn(8, generator=g), torch.randn(8, generator=g), torch.randint(-2, 6, (8,), generator=g)
    mult = torch.round(a.double() * 2.0 ** (f + MULT_SHIFT)).long()
    off = torch.round(b.double() * 2.0 ** (f + MULT_SHIFT)).long() + 2 ** (MULT_SHIFT - 1)
    z = torch.randint(-50, 50, (100, 8), generator=g).double()
    got = FixedAffine(mult, off, 30)(z)
    exact = (a.double() * z + b.double()) * 2.0**f
    assert (got - exact).abs().max() <= 0.5 + 1e-3


def test_provable_bound_never_saturates():
    """With the data-free bound (sigmas=None) no stream value reaches the B-bit limits, for any input."""
    model = tiny_model("resnet-A")
    fixed, _ = fixed_residual_model(model, 6, None)
    seen = []
    for m in fixed.modules():
        if isinstance(m, Saturate):
            m.register_forward_hook(lambda mod, i, o: seen.append(i[0].abs().max().item()))
    with torch.no_grad():
        fixed(torch.rand(64, 1, 8, 8))
    assert seen and max(seen) <= 2**5 - 1


def test_wide_streams_converge_to_float_residual():
    """At 24 bits the integer streams are within 2^-F of the float ones: predictions of the float-residual fused
    model are met on (nearly) every input (a flip needs a stream value within ~1e-5 of a threshold)."""
    model = tiny_model("resnet-B")
    x = pixels(64, seed=8) / SCALE
    with torch.no_grad():
        ref = fuse_model(model).double()(x.double()).argmax(1)
        got = fixed_residual_model(model, 24, 4.0)[0](x).argmax(1)
    assert (ref == got).double().mean() >= 0.95


def test_default_width_keeps_digits_accuracy():
    """A small binarized ResNet-20 trained briefly on digits: at the default stream width (22 bits) the integer
    residual path stays within 0.1 point of the float-residual model on the digits test set (docs/deploy.md
    has the zoo models' tables)."""
    from cimnas.commands.deploy import DEFAULT_RESIDUAL_BITS
    from cimnas.config import OptimConfig
    from cimnas.data import load_dataset
    from cimnas.nn.models import build_model
    from cimnas.train import fit

    splits = load_dataset("digits", seed=0)
    model = build_model("resnet20", in_channels=1, num_classes=10, image_size=8, width_mult=0.25,
                        precision="binary", refactor={"thermometer": True, "thermometer_levels": 4}, seed=0)
    fit(model, splits.search_train, OptimConfig(epochs=3, batch_size=32, lr=0.01, optimizer="adam"),
        device="cpu", seed=0)
    x, y = splits.test.tensors()
    with torch.no_grad():
        ref = (fuse_model(model.eval())(x).argmax(1) == y).double().mean()
        got = (fixed_residual_model(model, DEFAULT_RESIDUAL_BITS, 4.0)[0](x).argmax(1) == y).double().mean()
    assert ref > 0.3  # it learned something (chance: 0.1)
    assert abs(got - ref) <= 0.001


def test_self_check_refuses_a_lowering_that_misses_an_add(tmp_path):
    """If the program loses a residual add, the exporter's self-check refuses it instead of writing it."""
    from cimnas.errors import CimnasError

    model = tiny_model("resnet-A")
    ops, arrays = lower(model, 12, tiny_spec(), 4.0)
    add = next(o for o in ops if o["op"] == "add" and o["stride"] == 1)
    add["inputs"] = [add["inputs"][0], add["inputs"][0]]  # term + term instead of term + shortcut
    doc = make_doc({"kind": "binary", "residual_bits": 12, "range_sigmas": 4.0,
                    "input_shape": list(model.input_shape), "crossbar": tiny_spec().to_dict()}, ops, arrays)
    with pytest.raises(CimnasError, match="does not reproduce"):
        verify_export(model, doc, arrays, tiny_spec(), samples=32)
