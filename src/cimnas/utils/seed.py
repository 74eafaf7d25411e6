"""Seeding helpers: every random draw in cimnas takes an explicit seed or torch.Generator."""

from __future__ import annotations

import random

import numpy as np
import torch


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (for code paths outside our control,
    e.g. parameter initialisation inside torch.nn layers)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from a base seed and labels (episode index, trial index, ...)."""
    import hashlib

    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if present else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
