"""Uncertainty-aware training and evaluation (UAE Sec. 4.2, after NACIM), with the hardware model's Gaussian
defect (`cimnas.hardware.defects.GaussianNoise`).

Device model (UAE Eq. 1): the deployed weight is `W_dep = W_exp + N(0, std_l)`, i.i.d. per device, where `W_exp`
is the weight the accelerator is programmed with, i.e. the *quantized* weight `q(W)` of each QConv2d / QLinear.

- training (`noise_batch_context`, a `batch_context` for `cimnas.train.fit`): per batch, draw a fresh sample and
  set `q(W) + N` through `cimnas.nn.overrides.weight_overrides` (keeping the autograd graph, so the gradient flows
  to `W` through the quantizer's straight-through estimator); forward + backward run on the perturbed network and
  the overrides are removed on leaving the context, *before* `optimizer.step()`, so the update applies to the
  clean `W` (the paper's save W / perturb / backprop / restore W loop with an exact restore).
- evaluation (`evaluate_under_noise`): K trials of `cimnas.hardware.montecarlo.evaluate_trials` (weight-level,
  no crossbar): each sample is drawn once and held for the whole split (one deployed chip = one sample).
- any device (`noise.device: PRESET`, `DeviceNoise`): the child is mapped onto the config's `hardware` section's
  crossbar and the preset's models (programming / read noise, drift, relaxation, ...) act on its conductances,
  in training (one chip per batch, `device_perturbed_weights`) and in the K-sample evaluation (one chip per trial).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cimnas.hardware.aging import device_models
from cimnas.hardware.chip import Chip
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig, DefectModel, GaussianNoise
from cimnas.hardware.mapping import map_model
from cimnas.hardware.montecarlo import CachedBatches, accuracy, evaluate_trials, mapped_draw
from cimnas.hardware.periphery import PeripheryConfig
from cimnas.nn.layers import quant_layers
from cimnas.nn.overrides import weight_overrides


@dataclass
class DeviceNoise:
    """A device preset on a child mapped onto crossbars (`noise.device`): the crossbar, the chip's models (the
    device's, with UAE's Gaussian among them, `cimnas.hardware.aging.chip_models`) and the periphery."""

    spec: CrossbarSpec
    models: list[DefectModel]
    periphery: PeripheryConfig


def device_noise(noise: Any, spec: CrossbarSpec) -> DeviceNoise | None:
    """The DeviceNoise of a UAE `noise:` section (None for `device: ideal`: the weight-level Gaussian path)."""
    if noise.device == "ideal":
        return None
    gauss = DefectConfig(gaussian_sigma=noise.gaussian_sigma, gaussian_mode=noise.gaussian_mode)
    preset, models = device_models(noise.device, noise.device_time_s, gauss)
    return DeviceNoise(spec, models, preset.periphery)


@contextmanager
def device_perturbed_weights(model: nn.Module, dn: DeviceNoise, generator: torch.Generator) -> Iterator[None]:
    """Noise-aware training under a device: the model is mapped (its current weights), one chip is drawn (and
    read once), and every layer computes with q(W) + (W_chip - q(W)).detach(): the device's error as an additive
    term, with UAE's straight-through gradient to W."""
    with torch.no_grad():
        drawn = mapped_draw(map_model(model, dn.spec), dn.models)(generator)
        chip = drawn.weights() if isinstance(drawn, Chip) else drawn
    layers = quant_layers(model)
    qw = [m.quantized_weight() for _, m in layers]
    with weight_overrides(model, [q + (chip[n] - q).detach() for (n, _), q in zip(layers, qw, strict=True)]):
        yield


@contextmanager
def perturbed_weights(model: nn.Module, noise: GaussianNoise, generator: torch.Generator) -> Iterator[None]:
    """Inside the block every QConv2d/QLinear computes with `q(W) + N` (a fresh sample from `generator`); on exit
    the model computes with its clean weights again. Gradients of anything computed inside flow to `W`."""
    if noise.is_identity:  # bit-identical to plain training: nothing is touched
        yield
        return
    layers = [m for _, m in quant_layers(model)]
    qw = [m.quantized_weight() for m in layers]
    stds = noise.layer_stds(layers, qw)
    with weight_overrides(model, GaussianNoise.sample_weights(qw, stds, None, generator)):
        yield


def noise_batch_context(noise: GaussianNoise | DeviceNoise, generator: torch.Generator
                        ) -> Callable[[nn.Module], AbstractContextManager]:
    """`batch_context` for `cimnas.train.fit`: a fresh noise sample (or device chip) around every batch's
    forward/backward, removed before `optimizer.step()` (UAE Sec. 4.2)."""

    def ctx(model: nn.Module) -> AbstractContextManager:
        if isinstance(noise, DeviceNoise):
            return device_perturbed_weights(model, noise, generator)
        return perturbed_weights(model, noise, generator)

    return ctx


def evaluate_under_noise(model: nn.Module, split: Any, *, k: int, noise: GaussianNoise | DeviceNoise, seed: int,
                         batch_size: int = 512, max_samples: int | None = None, device: torch.device | str = "cpu",
                         progress: bool = False) -> tuple[float, list[float]]:
    """UAE uncertainty-aware evaluation: (clean accuracy, [accuracy under each of k noise samples]).

    The split's batches are loaded once; the k trials are `evaluate_trials(..., spec=None, [noise], k, seed)`
    (trial t drawn from derive_seed(seed, "mc-trial", t)); k = 0 gives an empty list (clean evaluation only).
    """
    device = torch.device(device)
    was_training = model.training
    model.to(device)
    batches = CachedBatches(split, batch_size, device, max_samples)
    try:
        clean = accuracy(model, batches)
    finally:
        model.train(was_training)
    if k == 0:
        return clean, []
    if isinstance(noise, DeviceNoise):  # a device: the child mapped onto crossbars, one chip per trial
        res = evaluate_trials(model, None, noise.spec, noise.models, k, seed, device=device, batches=batches,
                              progress=progress, periphery=noise.periphery)
    else:
        res = evaluate_trials(model, None, None, [noise], k, seed, device=device, batches=batches, progress=progress)
    return clean, res.accs
