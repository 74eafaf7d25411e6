"""Refuse up front what cannot finish: memory for a model, work for a Monte-Carlo run.

Before a model is allocated its parameter count and activation memory are estimated on the `meta` device (no
memory is used), and before a Monte-Carlo run its work (samples x evaluated inputs x multiply-accumulates) is
estimated; either over its limit is a one-line error that gives the estimate, the limit and how to raise it.

Limits (environment variables, for a user who has the machine for more):
- `CIMNAS_MAX_MEMORY_GB`: memory one training job may plan for (default: 80 % of this machine's RAM).
- `CIMNAS_MAX_PARAMS`: parameters of one model (default 5e8; ResNet-18 at HAWIS-A widths has about 1e8).
- `CIMNAS_MAX_WORK`: multiply-accumulates of one Monte-Carlo run (default 5e14, about a day on a 2-core CPU
  and minutes on a GPU; UAE's final 10,000-sample evaluation of a CIFAR child on 10,000 images is ~1e14).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from cimnas.errors import CimnasError, check

DEFAULT_MAX_PARAMS = 5e8
DEFAULT_MAX_WORK = 5e14
#: bytes per parameter while training with SGD + momentum: weight, gradient, momentum, and slack for Adam
TRAIN_BYTES_PER_PARAM = 16


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as e:
        raise CimnasError(f"environment variable {name}={raw!r} is not a number; unset it or give e.g. 1e9") from e
    check(value > 0 and value == value and value != float("inf"),
          f"environment variable {name}={raw!r} must be a finite number > 0")
    return value


def memory_limit_bytes() -> float:
    """`CIMNAS_MAX_MEMORY_GB` in bytes, else 80 % of the physical memory."""
    default = 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gb = _env_float("CIMNAS_MAX_MEMORY_GB", default / 2**30)
    return gb * 2**30


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def model_footprint(build: Callable[[], nn.Module], input_shape: Sequence[int], batch_size: int) -> dict:
    """Parameters and training memory of the model `build()` would make, measured on the meta device.

    Activation memory: every module output of one forward pass at `batch_size` (kept for the backward pass),
    4 bytes per value. Nothing is allocated."""
    with torch.device("meta"):
        model = build()
    params = sum(p.numel() for p in model.parameters())
    act = 0

    def hook(_m: nn.Module, _i: tuple, out: object) -> None:
        nonlocal act
        if isinstance(out, torch.Tensor):
            act += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.empty((1, *input_shape), device="meta"))
    finally:
        for h in handles:
            h.remove()
    train_bytes = params * TRAIN_BYTES_PER_PARAM + act * 4 * 2 * batch_size  # values + their gradients
    return {"params": int(params), "activations_per_sample": int(act), "train_bytes": float(train_bytes)}


def check_model(build: Callable[[], nn.Module], input_shape: Sequence[int], batch_size: int, what: str) -> dict:
    """Refuse a model whose parameters or training memory exceed the limits; returns its footprint."""
    try:
        fp = model_footprint(build, input_shape, batch_size)
    except (RuntimeError, NotImplementedError):  # a layer without meta support: nothing to estimate with
        return {}
    max_params = _env_float("CIMNAS_MAX_PARAMS", DEFAULT_MAX_PARAMS)
    check(fp["params"] <= max_params,
          f"{what} has {fp['params']:.3g} parameters, over the limit of {max_params:.3g}; choose smaller widths, "
          "or raise the limit with CIMNAS_MAX_PARAMS=<n> if this machine can hold it")
    mem = memory_limit_bytes()
    check(fp["train_bytes"] <= mem,
          f"{what} needs about {_fmt_bytes(fp['train_bytes'])} to train at batch size {batch_size}, over the limit "
          f"of {_fmt_bytes(mem)}; lower the batch size or the widths, or raise the limit with "
          "CIMNAS_MAX_MEMORY_GB=<GiB>")
    return fp


def check_work(samples: int, inputs: int, macs_per_input: float, what: str) -> float:
    """Refuse a Monte-Carlo run of `samples` draws x `inputs` evaluated inputs x `macs_per_input` over the work
    limit; returns the estimate in multiply-accumulates."""
    check(samples >= 0 and inputs >= 0, f"{what}: sample counts must be >= 0")
    work = float(samples) * float(inputs) * max(float(macs_per_input), 1.0)
    limit = _env_float("CIMNAS_MAX_WORK", DEFAULT_MAX_WORK)
    check(work <= limit,
          f"{what}: {samples:,} samples x {inputs:,} inputs x {macs_per_input:.3g} MACs = {work:.3g} "
          f"multiply-accumulates, over the limit of {limit:.3g} (days of compute); use fewer samples, or raise the "
          "limit with CIMNAS_MAX_WORK=<n>")
    return work
