"""What a forward pass does, seen from outside the layers: shape probes and function scans for `cimnas.convert`.

`probe_forward` runs one eval-mode forward pass for shapes only (on the meta device where it can); `scan_forward`
records, during such a pass, the matmuls / convolutions that run outside a Conv2d / Linear module (what no module
walk can see: attention, functional layers), or, with `watch`, every call of the given functions outside a crossbar
layer and its quantizers (`torch.overrides.TorchFunctionMode`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import Quantizer


def _meta_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Meta-device stand-ins for every parameter and buffer (shapes only), or None where a meta pass cannot
    stand for the real one (a hardware weight override is set, or the model already lives on `meta`)."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    if any(t.is_meta for _, t in tensors) or any(getattr(m, "weight_override", None) is not None
                                                 for m in model.modules()):
        return None
    return {n: torch.empty_like(t, device="meta") for n, t in tensors}


def probe_forward(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """One eval-mode forward pass on a zero batch of 1, for shapes only (hooks see every module's shapes).

    It runs on the `meta` device (no arithmetic: a ResNet-18 at 224x224 in a fraction of the real pass,
    `torch.func.functional_call` with meta stand-ins for the weights); a forward that needs values (data-dependent
    control flow, `.item()`) runs again on real zeros. A shape the model rejects is a one-line error.
    """
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            state = _meta_state(model)
            if state is not None:
                try:
                    return torch.func.functional_call(model, state, (torch.zeros((1, *input_shape), dtype=dtype,
                                                                                 device="meta"),))
                except CimnasError:
                    raise
                except Exception:  # values needed (or a shape error): the real pass decides, with its own message
                    pass
            return model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    except CimnasError:
        raise
    except Exception as e:  # the user's forward: any exception type
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CimnasError(f"the model rejects an input of shape {'x'.join(map(str, input_shape))} "
                          f"({type(e).__name__}: {msg[:200]}); give an input shape (dataset, --input-shape) it accepts"
                          ) from e
    finally:
        model.train(was)


_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.mm,
            torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.einsum, torch.baddbmm, torch.addmm, torch.addbmm,
            torch.tensordot, torch.inner, torch.mv, F.scaled_dot_product_attention, F.bilinear}
_CONVS = {F.conv1d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, torch.conv1d,
          torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d}
_LAYER_OPS = {F.conv2d, torch.conv2d, F.linear}


class _OpScan(TorchFunctionMode):
    """Records matmuls / convolutions a forward pass runs outside a Conv2d / Linear module's own forward (or, with
    `watch`, every call of those functions outside a crossbar layer and its quantizers)."""

    def __init__(self, stack: list[tuple[str, nn.Module]], watch: set | None = None):
        super().__init__()
        self.stack, self.watch = stack, watch
        self.found: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.watch is not None:
            if func in self.watch and not any(isinstance(m, QConv2d | QLinear | Quantizer) for _, m in self.stack):
                self.found.append((next((n for n, _ in reversed(self.stack) if n), ""),
                                   getattr(func, "__name__", str(func))))
        elif func in _MATMULS or func in _CONVS or func in _LAYER_OPS:
            in_layer = bool(self.stack) and isinstance(self.stack[-1][1], nn.Conv2d | nn.Linear)
            if func in _MATMULS or func in _CONVS or not in_layer:
                where = next((n for n, _ in reversed(self.stack) if n), "")
                self.found.append((where, getattr(func, "__name__", str(func))))
        return func(*args, **(kwargs or {}))


def scan_forward(model: nn.Module, input_shape: tuple[int, ...], watch: set | None = None) -> list[tuple[str, str]]:
    """(innermost module name, function) of what `_OpScan` records in one traced forward pass."""
    names = {m: n for n, m in model.named_modules()}
    stack: list[tuple[str, nn.Module]] = []

    def pre(mod, _args):
        stack.append((names[mod], mod))

    def post(mod, _args, _out):
        if stack and stack[-1][1] is mod:
            stack.pop()

    hooks = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post) for m in names]
    scan = _OpScan(stack, watch)
    try:
        with scan:
            probe_forward(model, input_shape)
    finally:
        for h in hooks:
            h.remove()
    return scan.found


__all__ = ["probe_forward", "scan_forward"]
