"""Hardware model benchmarks (issue 3).

mc_overhead:        time of T Monte-Carlo trials (SA0 + SA1 + variation drawn per trial, mapping
                    included) / time of T clean evaluations of the same set with the same loop.
                    Binary ResNet-20 (1x) on the digits test split, T = 10. Goal <= 1.2.
energy_ms_resnet20: milliseconds per energy estimate of a binary ResNet-20 super-net at a new
                    width vector each call (set_widths + cached trace + analytical model). Goal < 10.
energy_cold_ms_resnet20_4x: milliseconds for spec + layer geometry + estimate of a U-4x binarized
                    ResNet-20 from nothing (load_spec + estimate_arch: no model built, no weights).
                    Goal < 20 (issue 13 item 6; building the torch model took ~250 ms).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time  # noqa: E402

from cimnas.data import load_dataset  # noqa: E402
from cimnas.hardware import CrossbarSpec, DefectConfig, estimate_model, evaluate_trials  # noqa: E402
from cimnas.hardware.crossbar import load_spec  # noqa: E402
from cimnas.hardware.energy import estimate_arch  # noqa: E402
from cimnas.hardware.montecarlo import CachedBatches, accuracy  # noqa: E402
from cimnas.nn.models import build_model  # noqa: E402

TRIALS = 10


def mc_overhead() -> float:
    splits = load_dataset("digits", seed=0)
    model = build_model("resnet20", in_channels=1, num_classes=10, image_size=8, precision="binary", seed=0).eval()
    spec = CrossbarSpec()
    batches = CachedBatches(splits.test, 512, "cpu")
    defects = DefectConfig(sa0_rate=0.0175, sa1_rate=0.0904, variation_sigma=0.2)

    def clean():
        for _ in range(TRIALS):
            accuracy(model, batches)

    def mc():
        evaluate_trials(model, splits.test, spec, defects, TRIALS, seed=0, batches=batches)

    ta, tb = [], []
    for _ in range(3):  # alternate so drift hits both alike
        ta.append(median_time(mc, repeats=3, warmup=1))
        tb.append(median_time(clean, repeats=3, warmup=1))
    return sorted(ta)[1] / sorted(tb)[1]


def energy_ms_resnet20() -> float:
    spec = CrossbarSpec()
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32, width_mult=6, precision="binary")
    g = torch.Generator().manual_seed(0)
    base = model.base_widths
    estimate_model(model, (3, 32, 32), spec)  # first call traces once
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        r = torch.randint(1, 7, (len(base),), generator=g).tolist()
        model.set_widths([b * k for b, k in zip(base, r, strict=True)])
        estimate_model(model, (3, 32, 32), spec)
    return (time.perf_counter() - t0) / n * 1e3


def energy_cold_ms_resnet20_4x() -> float:
    def cold():
        estimate_arch("resnet20", load_spec("mnsim-default"), width_mult=4, precision="binary")

    return median_time(cold, repeats=20, warmup=2) * 1e3


def run() -> dict:
    torch.set_num_threads(1)
    return {"mc_overhead": round(mc_overhead(), 3), "energy_ms_resnet20": round(energy_ms_resnet20(), 3),
            "energy_cold_ms_resnet20_4x": round(energy_cold_ms_resnet20_4x(), 3)}


if __name__ == "__main__":
    print(run())
