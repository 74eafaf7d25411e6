"""Uncertainty-aware training and evaluation (UAE Sec. 4.2, after NACIM).

Device model (UAE Eq. 1): the deployed weight is `W_dep = W_exp + N(0, sigma)`, i.i.d. per
device. `W_exp` is the weight the accelerator is programmed with, i.e. the *quantized* weight
`q(W)` of each QConv2d / QLinear; the noise is put there through the layer's `weight_override`
hook, so the clean float weights `W` are never written to:

- training (`noise_batch_context`): per batch, draw a fresh noise sample, set
  `weight_override = q(W) + N` (keeping the autograd graph, so the gradient flows to `W` through
  the quantizer's straight-through estimator), run forward + backward on the perturbed network,
  then clear the overrides *before* `optimizer.step()` so the update applies to the clean `W`.
  This is the paper's save W / perturb / backprop / restore W loop with an exact restore.
- evaluation (`evaluate_under_noise`): K noise samples per child; each sample is drawn once and
  kept for the whole evaluation split (one deployed chip = one sample), giving K accuracies.

Noise modes: `absolute` (sigma in weight units, UAE's 0.04) and `relative` (sigma times the
layer's max |q(W)|), the same two modes as the hardware model's `gaussian` defect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from cimnas.errors import check
from cimnas.nn.layers import quant_layers

NOISE_MODES = ("absolute", "relative")


@dataclass
class NoiseConfig:
    """Additive Gaussian weight noise N(0, sigma) of UAE Eq. 1."""

    sigma: float = 0.04
    """standard deviation of the device noise (weight units in `absolute` mode)"""
    mode: Literal["absolute", "relative"] = "absolute"
    """`absolute`: N(0, sigma); `relative`: N(0, sigma * max|W| of the layer)"""

    def validate(self) -> None:
        check(self.sigma >= 0, f"noise.sigma must be >= 0 (a standard deviation), got {self.sigma}")
        check(self.mode in NOISE_MODES, f"noise.mode must be one of {', '.join(NOISE_MODES)}, got {self.mode!r}")


def draw_noise(weights: list[torch.Tensor], sigma: float, mode: str, generator: torch.Generator) -> list[torch.Tensor]:
    """One noise sample per weight tensor: N(0, sigma) or N(0, sigma * max|w|) (relative)."""
    out = []
    for w in weights:
        std = sigma if mode == "absolute" else sigma * float(w.detach().abs().max())
        n = torch.randn(w.shape, generator=generator, dtype=w.dtype, device=generator.device)
        out.append((n * std).to(w.device))
    return out


@contextmanager
def perturbed_weights(model: nn.Module, sigma: float, mode: str = "absolute",
                      generator: torch.Generator | None = None) -> Iterator[None]:
    """Inside the block every QConv2d/QLinear computes with `q(W) + N(0, sigma)` (a fresh sample);
    on exit the overrides are removed, so the model computes with its clean weights again.
    Gradients of anything computed inside flow to `W` (the gradient at the perturbed point)."""
    layers = [m for _, m in quant_layers(model)]
    saved = [m.weight_override for m in layers]
    if sigma == 0:  # bit-identical to plain training: nothing is touched
        yield
        return
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0)
    try:
        qw = [m.quantized_weight() for m in layers]
        for m, w, n in zip(layers, qw, draw_noise(qw, sigma, mode, generator), strict=True):
            m.weight_override = w + n
        yield
    finally:
        for m, s in zip(layers, saved, strict=True):
            m.weight_override = s


def noise_batch_context(sigma: float, mode: str, generator: torch.Generator) -> Callable[[nn.Module], Any]:
    """`batch_context` for `cimnas.train.train_epoch`: a fresh noise sample around every batch's
    forward/backward, removed before `optimizer.step()` (UAE Sec. 4.2)."""

    def ctx(model: nn.Module):
        return perturbed_weights(model, sigma, mode, generator)

    return ctx


def _eval_batches(split: Any, batch_size: int, max_samples: int | None, device: torch.device) -> list:
    """The evaluation batches, materialised once (K noise samples reuse them)."""
    out, seen = [], 0
    for x, y in split.batches(batch_size, shuffle=False):
        if max_samples is not None and seen >= max_samples:
            break
        if max_samples is not None and seen + len(y) > max_samples:
            x, y = x[: max_samples - seen], y[: max_samples - seen]
        out.append((x.to(device), y.to(device)))
        seen += len(y)
    return out


@torch.no_grad()
def _accuracy(model: nn.Module, batches: list) -> float:
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


@torch.no_grad()
def evaluate_under_noise(model: nn.Module, split: Any, *, k: int, sigma: float, mode: str = "absolute",
                         generator: torch.Generator, batch_size: int = 512, max_samples: int | None = None,
                         device: torch.device | str = "cpu", progress: bool = False) -> tuple[float, list[float]]:
    """UAE uncertainty-aware evaluation: (clean accuracy, [accuracy under each of k noise samples]).

    Each noise sample is drawn once and held for the whole split (one deployed accelerator),
    through `weight_override`; k = 0 returns an empty list (clean evaluation only).
    """
    check(k >= 0, f"the number of noise samples K must be >= 0, got {k}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    batches = _eval_batches(split, batch_size, max_samples, device)
    layers = [m for _, m in quant_layers(model)]
    saved = [m.weight_override for m in layers]
    accs: list[float] = []
    try:
        clean = _accuracy(model, batches)
        qw = [m.quantized_weight().detach() for m in layers]
        it = range(k)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="noise samples", leave=False)
        for _ in it:
            for m, w, n in zip(layers, qw, draw_noise(qw, sigma, mode, generator), strict=True):
                m.weight_override = w + n
            accs.append(_accuracy(model, batches))
    finally:
        for m, s in zip(layers, saved, strict=True):
            m.weight_override = s
        model.train(was_training)
    return clean, accs


def train_epoch(model: nn.Module, split: Any, optimizer: torch.optim.Optimizer, *, batch_size: int,
                generator: torch.Generator, device: torch.device | str = "cpu",
                batch_context: Callable[[nn.Module], Any] | None = None, progress: bool = False) -> dict:
    """One epoch of (optionally noise-aware) training. Uses the shared `cimnas.train.train_epoch`
    when it is installed, else this plain loop with the same contract."""
    try:
        from cimnas.train import train_epoch as shared
    except ImportError:
        shared = None
    if shared is not None:
        return shared(model, split, optimizer, batch_size=batch_size, generator=generator, device=device,
                      batch_context=batch_context, augment=True, progress=progress)
    model.train()
    total_loss, n = 0.0, 0
    for x, y in split.batches(batch_size, shuffle=True, generator=generator):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        ctx = batch_context(model) if batch_context is not None else _null()
        with ctx:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
        optimizer.step()  # after the context: the update applies to the clean weights
        total_loss += float(loss) * len(y)
        n += len(y)
    return {"loss": total_loss / max(n, 1)}


@contextmanager
def _null() -> Iterator[None]:
    yield
