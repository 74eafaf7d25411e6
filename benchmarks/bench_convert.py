"""Outside models on the crossbar (issue 18): conversion + estimate time, Monte-Carlo overhead of a converted model.

convert_estimate_s_resnet18_224: seconds to build a plain-PyTorch ResNet-18 (tests/zoo_models.py, 11.7 M
                    weights, 224x224), convert it (`cimnas.convert`, binary, with the mappability scan) and
                    estimate its energy / latency / area (`estimate_model`: trace + analytical model). Median of
                    3 after one warm-up in the process; `..._first` is the first call (torch's lazy start-up
                    included). Goal < 2 s.
mc_overhead_converted: `mc_overhead` of bench_hardware on the plain-PyTorch copy of the binary ResNet-20
                    (tests/zoo_models.py:resnet20_binary_form, converted binary): T = 10 Monte-Carlo trials
                    (SA0 + SA1 + variation, mapping included) / T clean evaluations, digits test split.
mc_converted_vs_zoo: time of those T trials on the converted copy / on the zoo's binary ResNet-20 (the same
                    network, the same weights). Goal: within the zoo's (about 1).
mc_overhead_zoo_same_run: the zoo model's own ratio (T trials / T clean evaluations) in the same run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import median_time  # noqa: E402

from cimnas.data import load_dataset  # noqa: E402
from cimnas.hardware import CrossbarSpec, DefectConfig, estimate_model, evaluate_trials  # noqa: E402
from cimnas.hardware.montecarlo import CachedBatches, accuracy  # noqa: E402
from cimnas.nn.models import build_model  # noqa: E402
from cimnas.nn.zoo import external_model  # noqa: E402

ZOO = HERE.parent / "tests" / "zoo_models.py"
TRIALS = 10


def convert_estimate_resnet18_224() -> tuple[float, float]:
    spec = CrossbarSpec()

    def once():
        model = external_model(f"{ZOO}:resnet18_imagenet", in_channels=3, num_classes=1000, image_size=224)
        estimate_model(model, (3, 224, 224), spec)

    t0 = time.perf_counter()
    once()
    first = time.perf_counter() - t0
    return median_time(once, repeats=3, warmup=0), first


def mc_times() -> tuple[float, float, float]:
    splits = load_dataset("digits", seed=0)
    zoo = build_model("resnet20", in_channels=1, num_classes=10, image_size=8, precision="binary", seed=0).eval()
    conv = external_model(f"{ZOO}:resnet20_binary_form", in_channels=1, num_classes=10, image_size=8).eval()
    conv.load_state_dict(zoo.state_dict())  # the same network and weights
    spec = CrossbarSpec()
    batches = CachedBatches(splits.test, 512, "cpu")
    defects = DefectConfig(sa0=0.0175, sa1=0.0904, sigma_variation=0.2)

    def mc(model):
        return lambda: evaluate_trials(model, splits.test, spec, defects, TRIALS, seed=0, batches=batches)

    def clean(model):
        def go():
            for _ in range(TRIALS):
                accuracy(model, batches)
        return go

    t_conv, t_zoo, t_clean, t_zoo_clean = [], [], [], []
    for _ in range(3):  # interleaved so drift hits all alike
        t_conv.append(median_time(mc(conv), repeats=3, warmup=1))
        t_zoo.append(median_time(mc(zoo), repeats=3, warmup=1))
        t_clean.append(median_time(clean(conv), repeats=3, warmup=1))
        t_zoo_clean.append(median_time(clean(zoo), repeats=3, warmup=1))
    mid, zoo_mid = sorted(t_conv)[1], sorted(t_zoo)[1]
    return mid / sorted(t_clean)[1], mid / zoo_mid, zoo_mid / sorted(t_zoo_clean)[1]


def run() -> dict:
    torch.set_num_threads(1)
    warm, first = convert_estimate_resnet18_224()
    overhead, vs_zoo, zoo_overhead = mc_times()
    return {"convert_estimate_s_resnet18_224": round(warm, 3), "convert_estimate_s_resnet18_224_first": round(first, 3),
            "mc_overhead_converted": round(overhead, 3), "mc_converted_vs_zoo": round(vs_zoo, 3),
            "mc_overhead_zoo_same_run": round(zoo_overhead, 3)}


if __name__ == "__main__":
    print(run())
