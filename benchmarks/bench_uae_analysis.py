"""UAE output-change analysis speed (issue 5), on LeNet-5 (1x28x28, 10 classes), S noise samples.

uae_analyze_vs_rng_floor: time of `output_change` for S samples / time of drawing the same S noise
    tensors alone (same generator, same chunks): on a CPU the random numbers are the floor.
    Goal: <= 1.5.
uae_analyze_vs_loop: time of the naive loop (save, perturb, evaluate, restore the weights one
    sample at a time, `output_change_loop`) / time of the vectorised `output_change`, both for S
    samples. Larger is better (how many times faster the vectorised analysis is).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time  # noqa: E402

from cimnas.hardware.defects import GaussianNoise  # noqa: E402
from cimnas.nn.models import build_model  # noqa: E402
from cimnas.pipelines.uae.analysis import WeightNoise, default_chunk, output_change, output_change_loop  # noqa: E402

SAMPLES = 2000
SIGMA = 0.04


def run() -> dict:
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=28).eval()
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noise = WeightNoise(model, GaussianNoise(SIGMA))
    chunk = default_chunk(noise.numel, SAMPLES)

    def analysis():
        output_change(model, x, SIGMA, SAMPLES, seed=0, chunk=chunk)

    def floor():
        g = torch.Generator().manual_seed(0)
        for s0 in range(0, SAMPLES, chunk):
            noise.draw_weights(min(chunk, SAMPLES - s0), g)  # the batched draw of W + N

    def loop():
        output_change_loop(model, x, SIGMA, SAMPLES, seed=0)

    t_analysis, t_floor = [], []
    for _ in range(3):  # alternate so load drift on the shared CPU hits both alike
        t_analysis.append(median_time(analysis, repeats=3, warmup=1))
        t_floor.append(median_time(floor, repeats=3, warmup=1))
    t_a, t_f = sorted(t_analysis)[1], sorted(t_floor)[1]
    t_loop = median_time(loop, repeats=1, warmup=0)
    return {
        "uae_analyze_vs_rng_floor": t_a / t_f,
        "uae_analyze_vs_loop": t_loop / t_a,
        "uae_analyze_lenet_samples": SAMPLES,
        "uae_analyze_lenet_ms_per_1000_samples": 1000.0 * t_a * 1000 / SAMPLES,
    }


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}")
