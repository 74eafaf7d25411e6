"""The GPU side of issue 13 (skipped without CUDA): training step, super-net step, mapping, every defect model,
the Monte-Carlo evaluator and the UAE analysis run on the device, with draws made there and results that match
the CPU's where the arithmetic is the same (`pytest -m cuda`; scripts/device_check.sh runs these)."""

from __future__ import annotations

import copy

import pytest
import torch

from cimnas.config import OptimConfig
from cimnas.data.base import Augmentation, DataSplit
from cimnas.device import generator
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DEFECTS, DefectConfig, GaussianNoise, sample_weight
from cimnas.hardware.mapping import map_model
from cimnas.hardware.montecarlo import CachedBatches, evaluate_trials, trials_per_pass
from cimnas.nn.models import build_model
from cimnas.nn.supernet import SuperNet
from cimnas.train import evaluate, fit

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def _split(n=96, hw=8, c=1, device=CUDA, aug=None):
    g = generator(0)
    x = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataSplit(x.to(device), y.to(device), 255.0, augmentation=aug)


def _resnet(precision="binary", hw=8, c=1):
    torch.manual_seed(0)
    return build_model("resnet20", in_channels=c, num_classes=10, image_size=hw, precision=precision)


def test_batches_and_augmentation_on_device_from_a_cpu_generator():
    s = _split(aug=Augmentation(crop_padding_px=2))
    xs = [(x, y) for x, y in s.batches(32, shuffle=True, generator=generator(1), augment=True)]
    again = [(x, y) for x, y in s.batches(32, shuffle=True, generator=generator(1), augment=True)]
    assert all(x.device.type == "cuda" and y.device.type == "cuda" for x, y in xs)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(xs, again, strict=True))
    assert sorted(torch.cat([y for _, y in xs]).tolist()) == sorted(s.labels.tolist())  # a permutation


@pytest.mark.parametrize("opts", [{}, {"amp": "bf16"}, {"channels_last": True}, {"compile": True}])
def test_training_step_on_gpu(opts):
    split = _split()
    cfg = OptimConfig(epochs=2, batch_size=32, lr=0.05, progress=False, augment=False, **opts)
    model = _resnet().to(CUDA)
    rec = fit(model, split, cfg, device=CUDA, seed=0)
    assert all(r["loss"] == r["loss"] for r in rec) and rec[-1]["loss"] < rec[0]["loss"] * 1.5
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert 0.0 <= evaluate(model, split, device=CUDA) <= 1.0


def test_train_steps_gpu_matches_cpu_float():
    """fp32 on the GPU follows the CPU closely for a float model on the same batches."""
    from cimnas.train import train_steps

    a = _resnet("float")
    b = copy.deepcopy(a).to(CUDA)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.05), torch.optim.SGD(b.parameters(), lr=0.05)
    ra = train_steps(a, list(_split(device="cpu").batches(32)), opt_a, device="cpu")
    rb = train_steps(b, list(_split().batches(32)), opt_b, device=CUDA)
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-3)


def test_supernet_step_on_gpu():
    net = SuperNet.build("resnet20", in_channels=1, num_classes=10, image_size=8, r_min=0.5, r_max=2.0,
                         d=4).to(CUDA)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = next(_split().batches(16))
    loss = net.slimmable_step(x, y, net.sandwich_widths(generator(0), 2), opt)
    assert torch.as_tensor(loss).device.type == "cuda" and float(loss) > 0
    n = net.recalibrate_bn(net.largest(), _split().batches(16), 2, CUDA)
    assert n == 2


def test_mapping_on_gpu_reads_back_the_quantized_weight():
    model = _resnet().to(CUDA).eval()
    mapped = map_model(model, CrossbarSpec())
    for ml in mapped.layers:
        assert ml.g_pos.device.type == "cuda"
        torch.testing.assert_close(ml.read_weight(), ml.layer.quantized_weight().detach())


@pytest.mark.parametrize("name", DEFECTS.names())
def test_every_defect_model_draws_on_the_gpu(name):
    model = _resnet().to(CUDA).eval()
    mapped = map_model(model, CrossbarSpec())
    kw = {"gaussian": {"sigma": 0.1, "mode": "bitsliced"}}.get(name, {})
    defect = DEFECTS.create(name, **kw)
    ml = mapped.layers[1]
    w = sample_weight(ml, [defect], generator(3, CUDA))
    again = sample_weight(ml, [defect], generator(3, CUDA))
    assert w.device.type == "cuda" and torch.equal(w, again)
    assert not torch.equal(w, ml.read_weight())  # the defect changed something


def test_monte_carlo_on_gpu_batched_equals_one_by_one():
    model = _resnet().to(CUDA).eval()
    split = _split(n=64)
    with torch.no_grad():
        split.labels = model(split.images.float() / 255).argmax(1)
    cfg = DefectConfig(sa0_rate=0.0175, sa1_rate=0.0904, variation_sigma=0.1)
    seq = evaluate_trials(model, split, CrossbarSpec(), cfg, 6, seed=1, device=CUDA, trial_batch=1)
    auto = evaluate_trials(model, split, CrossbarSpec(), cfg, 6, seed=1, device=CUDA)
    assert auto.accs == seq.accs and seq.mean < 1.0
    assert trials_per_pass(model, CachedBatches(split, 64, CUDA), 6, CUDA) > 1  # batched on the GPU
    noise = evaluate_trials(model, split, None, [GaussianNoise(0.5, "relative")], 5, seed=2, device=CUDA)
    noise1 = evaluate_trials(model, split, None, [GaussianNoise(0.5, "relative")], 5, seed=2, device=CUDA,
                             trial_batch=1)
    assert noise.accs == noise1.accs


def test_uae_analysis_on_gpu():
    from cimnas.pipelines.uae.analysis import output_change

    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=28).to(CUDA).eval()
    x = torch.rand(1, 1, 28, 28, device=CUDA)
    d = output_change(model, x, sigma=0.04, samples=200, seed=0)
    again = output_change(model, x, sigma=0.04, samples=200, seed=0)
    assert d.device.type == "cuda" and d.shape == (200, 10) and torch.equal(d, again)
    assert float(d.std()) > 0
