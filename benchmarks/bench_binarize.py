"""Binarization overhead (issues 2 and 13): training-step time of binarized layers / float layers.

One training step = zero_grad, forward, loss, backward, SGD(momentum) step, same data and
optimizer for both models. The binarized model is what `build_model(..., precision="binary")`
builds (HAWIS re-factorization: binary weights and inputs on every conv/FC, ReLU removed, the
classifier pool removed), the float one the same network in float; so the ratio charges the
binarized model with its quantizers (forward and straight-through backward) and with its larger
classifier (64*8*8 -> 10 instead of 64 -> 10), and credits it with the removed ReLUs.

binarize_overhead_conv:             a 3x3 conv, 64 -> 64 channels, 16x16 maps, batch 64: binary / float
binarize_overhead_resnet20:         binarized ResNet-20 / float ResNet-20 (3x32x32, batch 64) at
                                    torch's default thread count (what `make bench` runs)
binarize_overhead_resnet20_1thread: the same with torch.set_num_threads(1)
Goal: <= 1.15 each.

The machine is shared, so every figure interleaves the two models step by step (order
alternating within each pair) and takes the median of the per-pair ratios; `*_spread` is the
[25th, 75th] percentile of those per-pair ratios and `binarize_threads_default` the thread
count the default figures ran with. `binarize_overhead_resnet20_1thread_cpu` is the same
one-thread ratio in process CPU time (time.process_time), which other jobs on the machine
disturb far less than wall time (it is not a goal key; with more threads CPU time would count
OpenMP's spin-waiting, so it is given for one thread only).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from cimnas.nn.layers import QConv2d
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight


def _step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out, y) if y is not None else out.square().mean()
        loss.backward()
        opt.step()

    return step


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def interleaved_ratios(fn_a, fn_b, pairs: int = 15, warmup: int = 2) -> tuple[list[float], list[float]]:
    """time(fn_a) / time(fn_b) for `pairs` back-to-back pairs (a-b, then b-a, alternating), as
    (wall-clock ratios, process-CPU-time ratios)."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    wall, cpu = [], []
    for i in range(pairs):
        if i % 2 == 0:
            ta, tb = _timed(fn_a), _timed(fn_b)
        else:
            tb, ta = _timed(fn_b), _timed(fn_a)
        wall.append(ta[0] / tb[0])
        cpu.append(ta[1] / tb[1])
    return wall, cpu


def _summary(ratios: list[float]) -> tuple[float, list[float]]:
    q = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), [round(q[0], 4), round(q[2], 4)]


def run(pairs: int = 15) -> dict:
    torch.manual_seed(0)
    x = torch.rand(64, 64, 16, 16)
    fconv = QConv2d(64, 64, 3)
    bconv = QConv2d(64, 64, 3, input_quantizer=BinaryActivation(), weight_quantizer=BinaryWeight())
    bconv.load_state_dict(fconv.state_dict())
    conv_ratio, conv_spread = _summary(interleaved_ratios(_step_fn(bconv, x, None), _step_fn(fconv, x, None), pairs)[0])

    from cimnas.nn.models import build_model

    kw = dict(in_channels=3, num_classes=10, image_size=32)
    fmodel = build_model("resnet20", precision="float", **kw)
    bmodel = build_model("resnet20", precision="binary", **kw)
    xi, yi = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))
    bstep, fstep = _step_fn(bmodel, xi, yi), _step_fn(fmodel, xi, yi)
    threads = torch.get_num_threads()
    net_ratio, net_spread = _summary(interleaved_ratios(bstep, fstep, pairs)[0])
    torch.set_num_threads(1)
    try:
        wall, cpu = interleaved_ratios(bstep, fstep, pairs)
        (one_ratio, one_spread), (one_cpu, one_cpu_spread) = _summary(wall), _summary(cpu)
    finally:
        torch.set_num_threads(threads)
    return {
        "binarize_overhead_conv": conv_ratio,
        "binarize_overhead_conv_spread": conv_spread,
        "binarize_overhead_resnet20": net_ratio,
        "binarize_overhead_resnet20_spread": net_spread,
        "binarize_overhead_resnet20_1thread": one_ratio,
        "binarize_overhead_resnet20_1thread_spread": one_spread,
        "binarize_overhead_resnet20_1thread_cpu": one_cpu,
        "binarize_overhead_resnet20_1thread_cpu_spread": one_cpu_spread,
        "binarize_threads_default": threads,
    }


if __name__ == "__main__":
    print(run())
