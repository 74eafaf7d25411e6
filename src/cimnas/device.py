"""Devices, and random draws made on the device they are used on.

A `torch.Generator` lives on one device and can only feed draws there: a CPU generator passed to a CUDA draw
raises, and a CPU draw copied to the GPU costs a host-to-device transfer per call. The rules cimnas keeps:

- a generator is made on the device of the tensors it perturbs or indexes (`generator(seed, device)`);
- code that receives a generator from its caller and must draw on another device derives a generator there
  from one draw of the caller's (`generator_on(gen, device)`): deterministic, advances the caller's stream by
  one number, and costs nothing when the devices already match (CPU results are unchanged);
- `resolve_device(name)` turns a config's `device` ("auto", "cpu", "cuda", "cuda:1", "mps") into a
  `torch.device`, refusing an absent accelerator with a one-line error instead of failing inside a kernel.

The same seed gives the same numbers on the same kind of device; CPU and CUDA generators are different
streams (a run is reproducible on the device type it ran on).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cimnas.errors import CimnasError

DeviceLike = str | torch.device


def canonical(device: DeviceLike) -> torch.device:
    """`device` with an explicit index for accelerators ("cuda" -> "cuda:0", the current device), so two
    spellings of one device compare equal."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return d


def same_device(a: DeviceLike, b: DeviceLike) -> bool:
    """True when `a` and `b` name the same device ("cuda" and "cuda:0" do)."""
    return canonical(a) == canonical(b)


def resolve_device(name: DeviceLike = "auto") -> torch.device:
    """'auto' -> the first CUDA device if present, else the CPU; otherwise the named device, which must exist."""
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(text)
    except (RuntimeError, ValueError):
        raise CimnasError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise CimnasError(f"device {name!r} asked for but this torch has no CUDA device; use device: auto or cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise CimnasError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here; "
                              f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif d.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise CimnasError(f"device {name!r} asked for but MPS is not available; use device: auto or cpu")
    elif d.type not in ("cpu", "cuda", "mps"):
        raise CimnasError(f"device {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return d


def device_of(obj: Any) -> torch.device:
    """The device of a tensor, a module (its first parameter or buffer; CPU when it has none), a data split
    (its `.device`) or a generator."""
    if isinstance(obj, torch.Tensor | torch.Generator):
        return obj.device
    if isinstance(obj, nn.Module):
        for t in obj.parameters():
            return t.device
        for t in obj.buffers():
            return t.device
        return torch.device("cpu")
    if isinstance(obj, str | torch.device):
        return torch.device(obj)
    d = getattr(obj, "device", None)
    if d is not None:
        return torch.device(d)
    raise TypeError(f"cannot tell the device of {type(obj).__name__}")


def generator(seed: int, device: DeviceLike = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed`."""
    g = torch.Generator(device=canonical(device))
    g.manual_seed(int(seed))
    return g


def generator_on(gen: torch.Generator | None, device: DeviceLike) -> torch.Generator | None:
    """`gen` itself when it lives on `device`; otherwise a generator on `device` seeded from one 63-bit draw of
    `gen` (deterministic, advances `gen`). None stays None (torch's global generator of that device)."""
    if gen is None or same_device(gen.device, device):
        return gen
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=gen, device=gen.device))
    return generator(seed, device)
