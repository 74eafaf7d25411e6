"""Seeding helpers: every random draw in cimnas takes an explicit seed or torch.Generator.

Generators are made on the device their draws are used on (`cimnas.device`); `make_generator` and
`resolve_device` are kept here for the many callers that import them from this module.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from cimnas.device import DeviceLike, generator, resolve_device

__all__ = ["derive_seed", "make_generator", "resolve_device", "seed_everything"]


def make_generator(seed: int, device: DeviceLike = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (`cimnas.device.generator`)."""
    return generator(seed, device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (for code paths outside our control,
    e.g. parameter initialisation inside torch.nn layers; torch.manual_seed seeds every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from a base seed and labels (episode index, trial index, ...)."""
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)
