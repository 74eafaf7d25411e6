"""Weight regularizers added to the training loss.

- `two_side_regularizer`: HAWIS Eq. 4, Omega(w) = sum_i (|w_i| - w0)^2 over conv and FC weights,
  which pulls weights towards +-w0 instead of 0 so that few weights sit near the sign flip of
  binarization. Defaults w0 = 0.01, coefficient 1e-4 (the HAWIS authors' public training code,
  REFERENCE-FACTS.md).
- `l2_regularizer`: coef * sum_i w_i^2 over the same weights (weight decay), for comparison.

Both return a scalar tensor to add to the loss (coef * Omega) and act on the full weight
tensors of every nn.Conv2d / nn.Linear (QConv2d / QLinear included); BN and biases are excluded.
"""

from __future__ import annotations

import torch
from torch import nn

from cimnas.errors import CimnasError


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _check(coef: float, w0: float = 0.0) -> None:
    if not (coef >= 0) or not (w0 >= 0):
        raise CimnasError(f"regularizer coefficient and w0 must be >= 0, got coef={coef}, w0={w0}")


def two_side_regularizer(model: nn.Module, w0: float = 0.01, coef: float = 1e-4) -> torch.Tensor:
    """coef * sum((|w| - w0)^2) over conv and FC weights (HAWIS Eq. 4)."""
    _check(coef, w0)
    ws = _weights(model)
    if not ws:
        return torch.zeros(())
    return coef * sum(((w.abs() - w0) ** 2).sum() for w in ws)


def l2_regularizer(model: nn.Module, coef: float = 1e-4) -> torch.Tensor:
    """coef * sum(w^2) over conv and FC weights (plain L2 / weight decay)."""
    _check(coef)
    ws = _weights(model)
    if not ws:
        return torch.zeros(())
    return coef * sum((w**2).sum() for w in ws)
