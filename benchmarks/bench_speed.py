"""Speed of the training driver and of batched Monte-Carlo trials (issue 13), on the bench device.

The device is $CIMNAS_BENCH_DEVICE (default auto: CUDA when present, else the CPU). Every ratio interleaves its
two sides pair by pair (order alternating) in one process and takes the median of the per-pair ratios.

fit_vs_reference:          one epoch of `cimnas.train.fit` over 4 batches (binarized ResNet-20, 3x32x32, batch 64,
                           SGD momentum, no regulariser) / the same epoch as a minimal plain-PyTorch loop over
                           the same split's batches. Goal <= 1.05.
train_images_per_s_resnet20: images/s of that training step (batch 128) through fit; on CUDA also with
                           amp=bf16 + channels_last (`..._bf16_cl`).
compile_speedup_resnet20:  eager / torch.compile'd training step of the binarized ResNet-20 after warm-up
                           (report), `compile_time_s_resnet20` the first compiled steps' extra time. Run when
                           $CIMNAS_BENCH_COMPILE=1 (default on CUDA; off on the CPU, where inductor's C++ compile
                           of the training graph takes many minutes on a loaded 2-core machine): null otherwise.
mc_batched_vs_sequential:  T=8 Gaussian-noise trials of a UAE child (6 conv, 36 channels, 3x32x32, 64 images)
                           through `evaluate_trials` as it runs by default (memory-sized batched passes on an
                           accelerator, one by one on the CPU) / trial_batch=1, same draws. Goal <= 1.0 on the
                           CPU, <= 0.3 on a GPU.
mc_vmap_vs_sequential:     the same with all T trials forced into one vmapped pass (trial_batch=T) / one by one:
                           what batching costs or saves on this device.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cimnas.config import OptimConfig
from cimnas.data.base import DataSplit
from cimnas.device import resolve_device
from cimnas.hardware.defects import GaussianNoise
from cimnas.hardware.montecarlo import CachedBatches, evaluate_trials
from cimnas.nn.models import build_model
from cimnas.train import fit, train_steps
from cimnas.utils.seed import make_generator

DEVICE = resolve_device(os.environ.get("CIMNAS_BENCH_DEVICE", "auto"))


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _timed(fn: Callable[[], object]) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def pair_ratios(fn_a: Callable[[], object], fn_b: Callable[[], object], pairs: int, warmup: int = 1) -> list[float]:
    """time(fn_a) / time(fn_b) over `pairs` back-to-back pairs, order alternating."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    out = []
    for i in range(pairs):
        if i % 2 == 0:
            ta, tb = _timed(fn_a), _timed(fn_b)
        else:
            tb, ta = _timed(fn_b), _timed(fn_a)
        out.append(ta / tb)
    return out


def _resnet20(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet20", in_channels=3, num_classes=10, image_size=32, precision="binary").to(DEVICE)


def _split(n: int) -> DataSplit:
    g = make_generator(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataSplit(x.to(DEVICE), y.to(DEVICE), 255.0)


def _cfg(batch: int, **kw) -> OptimConfig:
    return OptimConfig(epochs=1, batch_size=batch, lr=0.01, momentum=0.9, regularizer="none", augment=False,
                       schedule="constant", progress=False, **kw)


def fit_vs_reference(pairs: int) -> float:
    split, cfg = _split(4 * 64), _cfg(64)
    a, b = _resnet20(), _resnet20()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.01, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.01, momentum=0.9)

    def via_fit() -> None:
        fit(a, split, cfg, device=DEVICE, seed=0, optimizer=opt_a)

    def reference() -> None:
        b.train()
        for x, y in split.batches(64, shuffle=True, generator=make_generator(0)):
            opt_b.zero_grad(set_to_none=True)
            F.cross_entropy(b(x), y).backward()
            opt_b.step()

    return statistics.median(pair_ratios(via_fit, reference, pairs))


def images_per_s(cfg: OptimConfig, steps: int) -> float:
    model = _resnet20()
    split = _split(steps * cfg.batch_size)
    fit(model, split, _cfg(cfg.batch_size, max_batches=2, amp=cfg.amp, channels_last=cfg.channels_last),
        device=DEVICE, seed=0)  # warm-up (cuDNN autotune, allocator)
    t = _timed(lambda: fit(model, split, cfg, device=DEVICE, seed=0))
    return steps * cfg.batch_size / t


def compile_speedup(pairs: int) -> tuple[float, float]:
    """(eager / compiled step time, compile time in s) for the binarized ResNet-20 training step (batch 64)."""
    model = _resnet20()
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = [(x, y) for x, y in _split(64).batches(64)]

    def eager() -> None:
        train_steps(model, batch, opt, device=DEVICE)

    def comp() -> None:
        train_steps(model, batch, opt, device=DEVICE, forward=compiled)

    t_eager = _timed(eager)
    t_first = _timed(comp) + _timed(comp)  # compile for training (+ a recompile some versions do once)
    ratios = pair_ratios(eager, comp, pairs, warmup=2)
    return statistics.median(ratios), max(0.0, t_first - 2 * t_eager)


def mc_ratios(pairs: int, trials: int = 8) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model("uae_cnn", in_channels=3, num_classes=10, image_size=32, channels=[36] * 6, kernels=[3] * 6,
                        int_bits=[1] * 6, frac_bits=[4] * 6).to(DEVICE).eval()
    split = _split(64)
    batches = CachedBatches(split, 64, DEVICE)
    noise = [GaussianNoise(0.04)]

    def run(trial_batch: int | None) -> Callable[[], object]:
        return lambda: evaluate_trials(model, None, None, noise, trials, 0, device=DEVICE, batches=batches,
                                       trial_batch=trial_batch)

    same = run(None)().accs == run(1)().accs == run(trials)().accs
    if not same:
        raise AssertionError("batched Monte-Carlo accuracies differ from one-by-one ones")
    auto = statistics.median(pair_ratios(run(None), run(1), pairs))
    forced = statistics.median(pair_ratios(run(trials), run(1), pairs))
    return auto, forced


def run() -> dict:
    gpu = DEVICE.type == "cuda"
    pairs = 9 if gpu else 3
    out: dict = {"speed_device": str(DEVICE)}
    out["fit_vs_reference"] = fit_vs_reference(pairs)
    out["train_images_per_s_resnet20"] = images_per_s(_cfg(128), steps=20 if gpu else 3)
    if gpu:
        out["train_images_per_s_resnet20_bf16_cl"] = images_per_s(_cfg(128, amp="bf16", channels_last=True), 20)
    if os.environ.get("CIMNAS_BENCH_COMPILE", "1" if gpu else "0") == "1":
        out["compile_speedup_resnet20"], out["compile_time_s_resnet20"] = compile_speedup(pairs)
    else:
        out["compile_speedup_resnet20"] = out["compile_time_s_resnet20"] = None
    out["mc_batched_vs_sequential"], out["mc_vmap_vs_sequential"] = mc_ratios(pairs)
    return out


if __name__ == "__main__":
    for k, v in run().items():
        print(k, v)
