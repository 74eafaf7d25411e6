"""Refuse up front what cannot finish: memory for a model, work for a Monte-Carlo run. The one place for limits.

Before a model is allocated its parameter count and activation memory are estimated on the `meta` device (no
memory is used), and before a Monte-Carlo run its work (samples x perturbed weights: the noise draws, which
dominate its cost) is estimated; either over its limit is a one-line error that gives the estimate, the limit and
how to raise it.

Limits (environment variables, for a user who has the machine for more):
- `CIMNAS_MAX_PARAMS`: parameters of one model (default 2e8 = 0.8 GB of float32 weights; ResNet-18 at HAWIS-A
  widths has about 1e8).
- `CIMNAS_MAX_MEMORY_GB`: memory one training job may plan for (default: 80 % of this machine's RAM).
- `CIMNAS_MAX_MC_WORK`: weight draws of one Monte-Carlo run, samples x weights (default 1e11: UAE's final 10,000
  samples of a CIFAR child with 1e6 weights are 1e10).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from cimnas.errors import CimnasError, check

DEFAULT_MAX_PARAMS = 2e8
DEFAULT_MAX_MC_WORK = 1e11
MAX_MC_WORK_ENV = "CIMNAS_MAX_MC_WORK"
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


def max_params() -> int:
    """`CIMNAS_MAX_PARAMS`, else the default."""
    return int(_env_float("CIMNAS_MAX_PARAMS", DEFAULT_MAX_PARAMS))


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
    model.eval()  # a batch of one: BatchNorm1d refuses it in training mode (LeNet-5's FC layers); same outputs sizes
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
    check_params(fp["params"], what)
    mem = memory_limit_bytes()
    check(fp["train_bytes"] <= mem,
          f"{what} needs about {_fmt_bytes(fp['train_bytes'])} to train at batch size {batch_size}, over the limit "
          f"of {_fmt_bytes(mem)}; lower the batch size or the widths, or raise the limit with "
          "CIMNAS_MAX_MEMORY_GB=<GiB>")
    return fp


def check_params(n: int, what: str) -> int:
    """Refuse a model of `n` parameters over `CIMNAS_MAX_PARAMS`."""
    limit = max_params()
    check(n <= limit, f"{what} would have {n:,} parameters ({4 * n / 2 ** 30:.1f} GiB of float32 weights), over the "
          f"limit of {limit:,}: choose smaller widths, or raise the limit with CIMNAS_MAX_PARAMS=<n> if this machine "
          "can hold it")
    return n


def max_mc_work() -> float:
    """The Monte-Carlo work limit (weight draws): `CIMNAS_MAX_MC_WORK`, else the default."""
    return _env_float(MAX_MC_WORK_ENV, DEFAULT_MAX_MC_WORK)


def check_mc_work(samples: int, weights: int, what: str = "Monte-Carlo samples") -> float:
    """Refuse (one line, before any work) `samples` draws of `weights` weights over the work limit; returns the
    estimate."""
    check(isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1,
          f"{what} must be a positive integer, got {samples!r}")
    work = float(samples) * max(1, int(weights))
    limit = max_mc_work()
    check(work <= limit, f"{what}: {samples:,} samples x {int(weights):,} weights = {work:.3g} weight draws, over "
          f"the limit of {limit:.3g}; use fewer samples or raise the limit with {MAX_MC_WORK_ENV}={work:.0e}")
    return work
