"""UAE search benchmark: cost of K-sample uncertainty-aware evaluation of one child relative to
K clean evaluations of the same data (issue 5, goal <= 1.2).

The K-sample path draws one noise sample per weight tensor per sample and sets it through the
layers' `weight_override`; the clean reference runs the same K passes over the same batches with
no noise. The ratio is the overhead of noise drawing + override, not of the forward passes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ratio  # noqa: E402

from cimnas.hardware.defects import GaussianNoise  # noqa: E402
from cimnas.hardware.montecarlo import CachedBatches, accuracy  # noqa: E402
from cimnas.pipelines.uae.child import build_child  # noqa: E402
from cimnas.pipelines.uae.noise import evaluate_under_noise  # noqa: E402
from cimnas.search.uae_space import UAESpaceConfig  # noqa: E402

K = 5


class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def batches(self, batch_size, shuffle=False, generator=None, augment=False):
        for i in range(0, len(self.y), batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]


def run() -> dict:
    torch.manual_seed(0)
    space = UAESpaceConfig(fc_hidden=128, channels=[8, 12, 16, 24])
    arch = space.arch_from_indices([2, 1, 1, 4] * 6)  # 16 channels, 3x3, int 1, frac 4
    model = build_child(arch, space, 1, 10, 8, seed=0).eval()
    split = _Split(torch.rand(360, 1, 8, 8), torch.randint(0, 10, (360,)))  # digits search_eval size
    batches = CachedBatches(split, 512, "cpu")

    def noisy():
        evaluate_under_noise(model, split, k=K, noise=GaussianNoise(0.04), seed=0)

    def clean():
        for _ in range(K + 1):  # K noisy passes + the clean pass evaluate_under_noise also makes
            accuracy(model, batches)

    return {"uae_k_sample_overhead": ratio(noisy, clean, repeats=5, rounds=3)}


if __name__ == "__main__":
    print(run())
