"""UAE output-change analysis (UAE Sec. 3.2, Eq. 3-6): the maths, no files.

For a trained model and one fixed input I, draw S noise samples N_j of the weights and collect

    O_dep,j = F(W_exp + N_j, I)          (Eq. 3)
    O_CG,j  = O_dep,j - O_ori            (Eq. 4),  O_ori = F(W_exp, I)

then fit a Gaussian to every output element and measure the fit with the MSE (Eq. 5) and the
chi-square statistic (Eq. 6) between observed and fitted probabilities per bin.

The noise is the hardware model's Gaussian defect (`cimnas.hardware.defects.GaussianNoise`, modes
absolute / relative / bitsliced, `NOISE_MODES`): W_exp is each layer's effective weight (the quantized
weight for quantized models), std_l comes from `GaussianNoise.layer_std`, and the S samples are drawn
chunk by chunk with its batched `sample_weights` (one `normal_` call per layer and chunk, from one
torch.Generator).

Speed: the S forward passes run as one batched computation per chunk. The perturbed weights are handed
to the layers through `cimnas.nn.overrides.weight_overrides` inside `torch.vmap`, so convolutions become
grouped convolutions and FC layers batched mat-vecs. On a CPU the random numbers then dominate the cost
(benchmarks/bench_uae_analysis.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from cimnas.errors import check
from cimnas.hardware.defects import NOISE_MODES, GaussianNoise
from cimnas.nn.layers import quant_layers
from cimnas.nn.overrides import weight_overrides

__all__ = ["NOISE_MODES", "WeightNoise", "default_chunk", "output_change", "output_change_loop", "GaussianFit",
           "bin_probabilities", "gaussian_fit_stats"]

#: Bytes of noise drawn per chunk when `chunk` is not given (depends only on the model size, so
#: the same seed gives the same samples on every machine).
CHUNK_BYTES = 64 * 2**20


class WeightNoise:
    """The Gaussian defect bound to one model: its layers, their clean effective weights W_exp (`base`) and
    the per-layer stds (`stds`), so that chunks of samples are drawn without recomputing them."""

    def __init__(self, model: nn.Module, noise: GaussianNoise):
        self.noise = noise
        self.layers = [m for _, m in quant_layers(model)]
        check(len(self.layers) > 0, "the model has no QConv2d/QLinear layers to perturb")
        with torch.no_grad():
            self.base = [m.effective_weight().detach().clone() for m in self.layers]
        self.stds = noise.layer_stds(self.layers, self.base)

    @property
    def numel(self) -> int:
        """Number of perturbed weights per sample."""
        return sum(w.numel() for w in self.base)

    def draw_weights(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """n perturbed weight samples per layer, W_exp + N, shape (n, *W.shape)."""
        return GaussianNoise.sample_weights(self.base, self.stds, n, generator)


def default_chunk(numel: int, samples: int) -> int:
    """Samples per chunk so that one chunk of noise is about CHUNK_BYTES (float32)."""
    return max(1, min(int(samples), CHUNK_BYTES // (4 * max(1, numel))))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BN uses running stats); `training` restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _as_single_input(x: torch.Tensor) -> torch.Tensor:
    check(isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == 1,
          "the input must be a batch of one, shape (1, C, H, W) or (1, features)")
    return x


def _noise(sigma: float, mode: str, cell_bits: int, weight_bits: int) -> GaussianNoise:
    return GaussianNoise(sigma, mode, cell_bits=cell_bits, weight_bits=weight_bits)


# ---------------------------------------------------------------- Eq. 3-4
def output_change(model: nn.Module, x: torch.Tensor, sigma: float = 0.04, samples: int = 10_000,
                  mode: str = "absolute", seed: int = 0, chunk: int | None = None, *,
                  cell_bits: int = 4, weight_bits: int = 8, progress: bool = False) -> torch.Tensor:
    """O_CG = F(W_exp + N_j, I) - F(W_exp, I) for j = 1..S (UAE Eq. 3-4), shape (S, n_out).

    `x` is one input as a batch of one, (1, C, H, W) or (1, features). Noise is drawn per chunk
    from one torch.Generator seeded with `seed`; same seed and chunk -> same result. The model is
    evaluated in eval mode (BN running statistics) and left as it was.
    """
    check(int(samples) >= 2, f"samples must be >= 2 (a Gaussian fit needs at least two), got {samples}")
    check(chunk is None or int(chunk) >= 1, f"chunk must be >= 1, got {chunk}")
    noise = WeightNoise(model, _noise(sigma, mode, cell_bits, weight_bits))
    x = _as_single_input(x)
    samples = int(samples)
    chunk = default_chunk(noise.numel, samples) if chunk is None else min(int(chunk), samples)
    gen = torch.Generator(device=noise.base[0].device)
    gen.manual_seed(int(seed))

    def forward_one(weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with weight_overrides(model, list(weights)):
            return model(x)[0]

    out = []
    with torch.no_grad(), _eval_mode(model):
        with weight_overrides(model, noise.base):
            o_ori = model(x)[0]  # Eq. 2 on the clean effective weights
        batched = torch.vmap(forward_one)
        starts = tqdm(range(0, samples, chunk), desc="noise samples", unit="chunk", leave=False,
                      disable=not progress)
        for s0 in starts:
            weights = noise.draw_weights(min(chunk, samples - s0), gen)
            out.append(batched(tuple(weights)) - o_ori)  # Eq. 4
    return torch.cat(out).reshape(samples, -1)


def output_change_loop(model: nn.Module, x: torch.Tensor, sigma: float = 0.04, samples: int = 100,
                       mode: str = "absolute", seed: int = 0, *, cell_bits: int = 4,
                       weight_bits: int = 8) -> torch.Tensor:
    """Reference implementation, one sample at a time: perturb, evaluate, restore.

    Same distribution as `output_change` (not the same random stream); used by tests and by the
    benchmark's loop baseline.
    """
    check(int(samples) >= 2, f"samples must be >= 2, got {samples}")
    noise = WeightNoise(model, _noise(sigma, mode, cell_bits, weight_bits))
    x = _as_single_input(x)
    gen = torch.Generator(device=noise.base[0].device)
    gen.manual_seed(int(seed))
    rows = []
    with torch.no_grad(), _eval_mode(model):
        o_ori = model(x)[0]
        for _ in range(int(samples)):
            with weight_overrides(model, GaussianNoise.sample_weights(noise.base, noise.stds, None, gen)):
                rows.append(model(x)[0] - o_ori)
    return torch.stack(rows).reshape(int(samples), -1)


# ---------------------------------------------------------------- Eq. 5-6
@dataclass
class GaussianFit:
    """Per-element Gaussian fit of output changes and its goodness of fit (UAE Eq. 5-6).

    chi2[e] = sum_i (O_i - E_i)^2 / E_i, mse[e] = mean_i (O_i - E_i)^2 over `bins` bins, with
    O_i / E_i the observed / fitted probability of bin i. `degenerate[e]` marks elements whose
    samples are all equal (std 0): a zero-width Gaussian fits them exactly (chi2 = mse = 0).
    """

    chi2: torch.Tensor
    mse: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    degenerate: torch.Tensor
    bins: int
    span: float
    samples: int

    @property
    def chi2_mean(self) -> float:
        return float(self.chi2.mean())

    @property
    def mse_mean(self) -> float:
        return float(self.mse.mean())

    def to_dict(self) -> dict:
        return {
            "chi2": self.chi2.tolist(), "mse": self.mse.tolist(),
            "mean": self.mean.tolist(), "std": self.std.tolist(),
            "chi2_mean": self.chi2_mean, "mse_mean": self.mse_mean,
            "degenerate": [int(i) for i in torch.nonzero(self.degenerate).flatten()],
            "bins": self.bins, "span_std": self.span, "samples": self.samples,
        }


def bin_probabilities(values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, bins: int,
                      span: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Observed and fitted probability per bin, each (n_elements, bins).

    The bins are `bins` equal slices of [mean - span*std, mean + span*std] of each element's
    fitted Gaussian; everything below (above) that range is folded into the first (last) bin,
    for both the samples and the Gaussian (whose end bins then hold the tail mass too). Why not
    min-to-max of the samples: one far outlier would then stretch every bin and put a bin with
    an expected probability of ~0 under an observed 1/S, so a single sample could swing chi2 by
    orders of magnitude. Here an outlier only adds 1/S to an end bin whose expected mass is the
    whole Gaussian tail.
    """
    s, e = values.shape
    width = 2.0 * span / bins
    z = (values - mean) / std  # (S, E)
    idx = torch.floor((z + span) / width).clamp_(0, bins - 1).long()
    counts = torch.zeros(e, bins, dtype=torch.float64, device=values.device)
    counts.scatter_add_(1, idx.T.contiguous(), torch.ones(e, s, dtype=torch.float64, device=values.device))
    observed = counts / s
    edges = torch.linspace(-span, span, bins + 1, dtype=torch.float64, device=values.device)
    cdf = torch.special.ndtr(edges)
    cdf[0], cdf[-1] = 0.0, 1.0  # fold the tails into the end bins
    expected = (cdf[1:] - cdf[:-1]).expand(e, bins)  # same in z-units for every element
    return observed, expected


def gaussian_fit_stats(values: torch.Tensor, bins: int = 100, span: float = 4.0) -> GaussianFit:
    """Fit N(mean, std) (maximum likelihood) to each column of `values` (S, n_out) (or (S,)) and
    return chi2 (Eq. 6) and MSE (Eq. 5) between observed and fitted bin probabilities.

    Bins: see `bin_probabilities` (mean +- span*std, tails folded into the end bins).
    """
    check(isinstance(bins, int) and bins >= 2, f"bins must be an integer >= 2, got {bins}")
    check(span > 0 and math.isfinite(span), f"span must be a finite number > 0 (in std units), got {span}")
    values = torch.as_tensor(values)
    if values.dim() == 1:
        values = values[:, None]
    check(values.dim() == 2, f"values must be (samples, elements), got shape {tuple(values.shape)}")
    check(values.shape[0] >= 2, f"samples must be >= 2 for a Gaussian fit, got {values.shape[0]}")
    values = values.detach().to(torch.float64)
    check(bool(torch.isfinite(values).all()), "values contain NaN or inf; check the model and sigma")
    mean = values.mean(0)
    std = values.std(0, correction=0)
    degenerate = std <= 1e-12 * torch.clamp(mean.abs(), min=1.0)
    safe_std = torch.where(degenerate, torch.ones_like(std), std)
    observed, expected = bin_probabilities(values, mean, safe_std, bins, span)
    diff2 = (observed - expected) ** 2
    chi2 = (diff2 / expected).sum(1)  # Eq. 6
    mse = diff2.mean(1)  # Eq. 5
    zero = torch.zeros_like(chi2)
    return GaussianFit(
        chi2=torch.where(degenerate, zero, chi2), mse=torch.where(degenerate, zero, mse),
        mean=mean, std=std, degenerate=degenerate, bins=bins, span=float(span), samples=values.shape[0],
    )
