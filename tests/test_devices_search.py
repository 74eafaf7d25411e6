"""Training and search under any device: UAE noise-aware training and K-sample evaluation, HAWIS's MC reward."""

from types import SimpleNamespace

import pytest
import torch
from tests.test_montecarlo import setup

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec, load_spec
from cimnas.nn.layers import quant_layers
from cimnas.pipelines.hawis.config import DefectsConfig
from cimnas.pipelines.hawis.context import mc_accuracies
from cimnas.pipelines.uae.config import NoiseConfig
from cimnas.pipelines.uae.noise import DeviceNoise, device_noise, evaluate_under_noise, noise_batch_context

MNSIM = load_spec("mnsim-default")


def test_uae_noise_section_takes_a_device():
    assert device_noise(NoiseConfig(), MNSIM) is None  # ideal: UAE's weight-level Gaussian as before
    dn = device_noise(NoiseConfig(gaussian_sigma=0.0, device="pcm-joshi2020", device_time_s=3600.0), MNSIM)
    assert isinstance(dn, DeviceNoise) and {type(m).__name__ for m in dn.models} == {
        "ProgrammingNoise", "Drift", "ReadNoise"}
    with pytest.raises(CimnasError, match="unknown device preset"):
        NoiseConfig(device="nope").validate()
    with pytest.raises(CimnasError, match="bitsliced"):
        NoiseConfig(device="reram-wan2022", gaussian_mode="bitsliced").validate()


def test_noise_aware_training_under_a_device_perturbs_and_keeps_the_gradient():
    net, split = setup()
    dn = device_noise(NoiseConfig(gaussian_sigma=0.0, device="reram-wan2022"), MNSIM)
    ctx = noise_batch_context(dn, torch.Generator().manual_seed(0))
    x, y = split.x[:16], split.y[:16]
    layers = [m for _, m in quant_layers(net)]
    clean = [m.quantized_weight().detach().clone() for m in layers]
    with ctx(net):
        noisy = [m.effective_weight().detach().clone() for m in layers]
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
    assert all(not torch.equal(a, b) for a, b in zip(noisy, clean, strict=True))
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in layers)
    assert all(m.weight_override is None for m in layers)  # restored before the optimizer step


def test_k_sample_evaluation_under_a_device_is_reproducible():
    net, split = setup()
    dn = device_noise(NoiseConfig(gaussian_sigma=0.0, device="reram-wan2022", device_time_s=86400.0), MNSIM)
    clean, accs = evaluate_under_noise(net, split, k=3, noise=dn, seed=5, batch_size=32)
    again = evaluate_under_noise(net, split, k=3, noise=dn, seed=5, batch_size=32)[1]
    assert clean == 1.0 and len(accs) == 3 and accs == again and all(0 <= a <= 1 for a in accs)


def test_hawis_monte_carlo_reward_under_a_device():
    net, split = setup()
    d = DefectsConfig(sa0_rate=0.0, sa1_rate=0.0, device="pcm-joshi2020", device_time_s=3.15e7)
    d.validate()
    ctx = SimpleNamespace(cfg=SimpleNamespace(defects=d), spec=CrossbarSpec(), device="cpu")
    accs = mc_accuracies(ctx, net, split, 3, 0)
    ideal = SimpleNamespace(cfg=SimpleNamespace(defects=DefectsConfig(sa0_rate=0.0, sa1_rate=0.0)),
                            spec=CrossbarSpec(), device="cpu")
    assert mc_accuracies(ideal, net, split, 3, 0) == [1.0] * 3
    assert len(accs) == 3 and accs == mc_accuracies(ctx, net, split, 3, 0)
    with pytest.raises(CimnasError, match="unknown device preset"):
        DefectsConfig(device="nope").validate()
