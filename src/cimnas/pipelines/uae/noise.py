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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn

from cimnas.hardware.defects import GaussianNoise
from cimnas.hardware.montecarlo import CachedBatches, accuracy, evaluate_trials
from cimnas.nn.layers import quant_layers
from cimnas.nn.overrides import weight_overrides


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


def noise_batch_context(noise: GaussianNoise, generator: torch.Generator
                        ) -> Callable[[nn.Module], AbstractContextManager]:
    """`batch_context` for `cimnas.train.fit`: a fresh noise sample around every batch's forward/backward,
    removed before `optimizer.step()` (UAE Sec. 4.2)."""

    def ctx(model: nn.Module) -> AbstractContextManager:
        return perturbed_weights(model, noise, generator)

    return ctx


def evaluate_under_noise(model: nn.Module, split: Any, *, k: int, noise: GaussianNoise, seed: int,
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
    res = evaluate_trials(model, None, None, [noise], k, seed, device=device, batches=batches, progress=progress)
    return clean, res.accs
