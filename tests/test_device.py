"""Device helpers and the GPU training path, on the CPU (issue 13 items 1-2; the CUDA side is tests/test_cuda.py).

- generators: made on the device of their draws; a generator from another device seeds one there (deterministic);
- data: batches and augmentation draw on the split's device, with the CPU stream unchanged;
- fit(): channels_last equals NCHW, bf16 autocast keeps the loss in fp32, torch.compile wraps the forward, and
  no host synchronisation happens per batch (the number of host reads does not grow with the batch count).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cimnas.config import OptimConfig, from_dict
from cimnas.data import load_dataset
from cimnas.data.base import Augmentation, DataSplit
from cimnas.device import canonical, device_of, generator, generator_on, resolve_device, same_device
from cimnas.errors import CimnasError
from cimnas.nn.models import build_model
from cimnas.train import autocast, fit, speed_options, train_steps, training_forward


# ------------------------------------------------------------------ generators and devices
def test_generator_on_same_device_is_the_same_object():
    g = generator(5, "cpu")
    assert generator_on(g, "cpu") is g
    assert generator_on(None, "cpu") is None


def test_generator_on_other_device_is_deterministic_and_advances(monkeypatch):
    """A foreign generator seeds a new one from one 63-bit draw (checked against that draw by hand)."""
    import cimnas.device as dev

    made = []
    monkeypatch.setattr(dev, "same_device", lambda a, b: False)  # pretend the target is another device
    monkeypatch.setattr(dev, "generator", lambda seed, device: made.append(seed) or torch.Generator().manual_seed(seed))
    g = generator(11, "cpu")
    expect = int(torch.randint(0, 2**63 - 1, (1,), generator=generator(11, "cpu")))
    h = generator_on(g, "elsewhere")
    assert made == [expect]
    assert torch.equal(torch.rand(3, generator=h), torch.rand(3, generator=torch.Generator().manual_seed(expect)))
    generator_on(g, "elsewhere")
    assert made[1] != made[0]  # the caller's stream advanced by one draw


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CimnasError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(CimnasError, match="no CUDA device"):
            resolve_device("cuda")


def test_device_of_and_same_device():
    m = torch.nn.Linear(2, 2)
    assert device_of(m) == torch.device("cpu") and device_of(torch.zeros(1)) == torch.device("cpu")
    assert device_of(torch.nn.ReLU()) == torch.device("cpu")
    assert device_of(generator(0)) == torch.device("cpu")
    assert same_device("cpu", torch.device("cpu")) and canonical("cpu") == torch.device("cpu")
    with pytest.raises(TypeError):
        device_of(3)


# ------------------------------------------------------------------ data on its device
def _split(n=20, hw=6):
    x = torch.randint(0, 256, (n, 3, hw, hw), dtype=torch.uint8, generator=generator(0))
    return DataSplit(x, torch.arange(n) % 4, 255.0, augmentation=Augmentation(crop_padding_px=2))


def test_batches_cpu_stream_unchanged():
    """Shuffle order = torch.randperm on the CPU generator, as before the device change (hand reference)."""
    s = _split()
    got = torch.cat([y for _, y in s.batches(7, shuffle=True, generator=generator(3))])
    want = s.labels[torch.randperm(20, generator=generator(3))]
    assert torch.equal(got, want)


def test_augmentation_per_sample_and_reproducible():
    s = _split(n=64)
    a = torch.cat([x for x, _ in s.batches(64, shuffle=False, generator=generator(1), augment=True)])
    b = torch.cat([x for x, _ in s.batches(64, shuffle=False, generator=generator(1), augment=True)])
    clean = s.images.float() / 255.0
    assert torch.equal(a, b)
    changed = (a != clean).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 64  # per-sample draws: some images moved, not all the same way
    # a hand check of one sample: crop offsets (r, c) from padding 2 and a flip reproduce it
    g = generator(1)
    off = torch.randint(0, 5, (2, 64), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    xp = torch.nn.functional.pad(clean, (2, 2, 2, 2))
    r, c = int(off[0, 5]), int(off[1, 5])
    ref = xp[5, :, r:r + 6, c:c + 6]
    assert torch.equal(a[5], ref.flip(2) if bool(flip[5]) else ref)


# ------------------------------------------------------------------ the training path
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, limit=160)


def _net(splits, seed=0, precision="binary"):
    torch.manual_seed(seed)
    return build_model("resnet20", in_channels=1, num_classes=10, image_size=splits.image_size,
                       precision=precision, width_mult=0.5)


def test_channels_last_equals_nchw(digits):
    """Same training in NHWC (float model: a binarized one would amplify last-bit differences at thresholds)."""
    cfg = OptimConfig(epochs=1, batch_size=32, lr=0.05, progress=False, augment=False, max_batches=3)
    a = _net(digits, precision="float")
    b = copy.deepcopy(a)
    ra = fit(a, digits.train, cfg, device="cpu", seed=2)
    rb = fit(b, digits.train, from_dict(OptimConfig, {**cfg.__dict__, "channels_last": True}), device="cpu", seed=2)
    conv = next(p for p in b.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert ra[0]["loss"] == pytest.approx(rb[0]["loss"], rel=1e-4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-4)


def test_bf16_autocast_trains_with_fp32_loss(digits, monkeypatch):
    import cimnas.train as tr

    seen = []
    real = tr.F.cross_entropy
    monkeypatch.setattr(tr.F, "cross_entropy", lambda logits, y: seen.append(logits.dtype) or real(logits, y))
    cfg = OptimConfig(epochs=1, batch_size=32, lr=0.05, progress=False, max_batches=2, amp="bf16")
    rec = fit(_net(digits), digits.train, cfg, device="cpu", seed=0)
    assert seen == [torch.float32, torch.float32]
    assert rec[0]["loss"] == rec[0]["loss"] and rec[0]["loss"] > 0
    with autocast("cpu", "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(CimnasError, match="amp"):
        from_dict(OptimConfig, {"amp": "fp8"}).validate()


def test_compile_wraps_forward_and_shares_parameters(digits):
    m = _net(digits)
    assert training_forward(m, OptimConfig()) is None
    fwd = training_forward(m, OptimConfig(compile=True))
    assert isinstance(fwd, torch.nn.Module) and fwd is not m
    assert {id(p) for p in fwd.parameters()} == {id(p) for p in m.parameters()}
    assert speed_options(m, OptimConfig(compile=True), compiled=False)["forward"] is None


def test_no_host_sync_per_batch(digits, monkeypatch):
    """Host reads (item / float / int / bool / tolist of a tensor) in train_steps do not grow with the batches."""
    counts = {"n": 0}
    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, **k):
            counts["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    batches = list(digits.train.batches(16))
    m = _net(digits)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    reads = []
    for k in (2, 6):
        counts["n"] = 0
        train_steps(m, batches[:k], opt, device="cpu")
        reads.append(counts["n"])
    assert reads[0] == reads[1]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CIMNAS_RUN_DEVICE_CHECK") != "1",
                    reason="minutes on a 2-core CPU: set CIMNAS_RUN_DEVICE_CHECK=1 to run the device check's CPU path")
def test_device_check_tiny_cpu_path(tmp_path):
    """scripts/device_check.sh --tiny runs every step on the CPU and writes one JSON with each step's outcome."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    subprocess.run(["bash", str(root / "scripts/device_check.sh"), "--tiny"], env=env, check=True, timeout=900)
    res = json.loads((tmp_path / "device_check.json").read_text())
    assert res["tiny"] is True and res["environment"]["cuda"] is False
    assert {"environment", "cuda_tests", "cost", "train_u1x", "train_u2x"} <= set(res["steps"])
    assert res["steps"]["cost"]["rc"] == "0" and res["cost"]["hawis_episodes_timed"] == 1
    for k in ("train_u1x", "train_u2x"):
        assert res["steps"][k]["rc"] == "0" and 0.0 <= res["fashion_mnist"][k]["test_acc"] <= 1.0
