"""One UAE child: build it from an architecture, train it (plain or noise-aware) through `cimnas.train.fit`,
evaluate it under K noise samples. `evaluate_child` is a pure function of (arch, config, data, seed) returning
plain data, so it can be shipped to a worker unchanged (DESIGN.md, "ready to scale out")."""

from __future__ import annotations

import time
from typing import Any

import torch

from cimnas.config import OptimConfig
from cimnas.hardware.energy import estimate
from cimnas.nn.counting import trace_layers
from cimnas.nn.models.uae_cnn import build_uae_cnn
from cimnas.nn.quantizers import FixedPoint
from cimnas.pipelines.uae.config import UAESearchConfig
from cimnas.pipelines.uae.noise import device_noise, evaluate_under_noise, noise_batch_context
from cimnas.search.uae_rewards import summarize
from cimnas.search.uae_space import UAEArch, UAESpaceConfig
from cimnas.train import fit
from cimnas.utils.seed import derive_seed, make_generator


def representable_init(model: torch.nn.Module) -> torch.nn.Module:
    """Scale each conv layer's initial weights so their std is at least one step 2^-frac of its
    fixed-point weight quantizer (in place; deterministic, no random numbers).

    PyTorch's default init has bound 1/sqrt(fan_in), e.g. 0.04 for a 7x7 conv over 12 channels:
    with 2 or 3 fraction bits (step 0.25 / 0.125) every weight of such a layer rounds to 0, the
    layer outputs 0, BN outputs its bias 0, ReLU'(0) = 0 and no gradient ever reaches the layer,
    so the child stays at chance accuracy whatever its other choices, and the search reward
    measures "some layer was dead at init" instead of accuracy or robustness. Every conv of the
    UAE CNN is followed by BatchNorm, so scaling its weights by a constant does not change the
    clean function it computes (only which values the quantizer can represent).
    """
    with torch.no_grad():
        for conv in getattr(model, "convs", []):
            q = conv.weight_quantizer
            if not isinstance(q, FixedPoint):
                continue
            std = float(conv.weight.std())
            if 0 < std < q.step:
                conv.weight.mul_(q.step / std)
    return model


def build_child(arch: UAEArch, space: UAESpaceConfig, in_channels: int, num_classes: int, image_size: int,
                seed: int, init: str = "representable") -> torch.nn.Module:
    """The child network of `arch`, its parameters initialised from `seed` (global RNG untouched);
    `init="representable"` applies `representable_init` to the conv weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_uae_cnn(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                              **space.model_kwargs(arch))
    return representable_init(model) if init == "representable" else model


def child_energy_uj(model: torch.nn.Module, input_shape: tuple[int, int, int], hardware: Any) -> float:
    """Energy (uJ) of one inference from the shared hardware model, under the config's `hardware` section."""
    return float(estimate(trace_layers(model, input_shape), hardware.spec(("energy",)))["energy_uj"])


def uae_noise(cfg: UAESearchConfig) -> Any:
    """The noise of a UAE run: the device preset on crossbars (`noise.device`), else UAE's Gaussian (Eq. 1)."""
    return device_noise(cfg.noise, cfg.hardware.spec()) or cfg.noise.defect()


def train_child(model: torch.nn.Module, split: Any, cfg: UAESearchConfig, train: OptimConfig, seed: int,
                device: torch.device, desc: str = "child") -> list[dict]:
    """Plain or noise-aware (UAE Sec. 4.2) training through `cimnas.train.fit` with `train` (epochs, optimiser);
    batch order from derive_seed(seed, "order"), training noise from derive_seed(seed, "train-noise")."""
    ctx = None
    if cfg.noise_aware():
        ctx = noise_batch_context(uae_noise(cfg), make_generator(derive_seed(seed, "train-noise"), device))
    return fit(model, split, train, device=device, seed=derive_seed(seed, "order"), batch_context=ctx, desc=desc)


def evaluate_child(arch: UAEArch, cfg: UAESearchConfig, splits: Any, seed: int,
                   device: torch.device | str = "cpu") -> dict:
    """Train + uncertainty-aware evaluation of one child; returns plain data (JSON-ready)."""
    device = torch.device(device)
    t0 = time.perf_counter()
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    model = build_child(arch, cfg.space, splits.in_channels, splits.num_classes, splits.image_size, seed,
                        cfg.train.init).to(device)
    energy = child_energy_uj(model, shape, cfg.hardware)
    train_child(model, splits.search_train, cfg, cfg.train, seed, device)
    t1 = time.perf_counter()
    clean, accs = evaluate_under_noise(model, splits.search_eval, k=cfg.eval.k, noise=uae_noise(cfg),
                                       seed=derive_seed(seed, "eval-noise"), batch_size=cfg.eval.batch_size,
                                       max_samples=cfg.eval.max_samples, device=device)
    t2 = time.perf_counter()
    return {"clean_acc": clean, "noisy": summarize(accs), "noisy_accs": accs, "energy_uj": energy,
            "params": sum(p.numel() for p in model.parameters()), "train_s": t1 - t0, "eval_s": t2 - t1}
