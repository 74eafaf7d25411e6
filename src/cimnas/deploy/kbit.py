"""Lowering of k-bit DoReFa chains (the Quan-kbit baseline: MLP, LeNet-5) to integer ops.

Layer l computes Z = sum codes_a codes_w (activation codes 0..n_a, weight codes odd in [-n_w, n_w]); its real
output y0 = Z / (n_a n_w) + b goes through an eval-mode BN (s, mu, beta; identity without one), a ReLU and
maybe a max-pool into the next layer's quantizer q = round(clip(y, 0, 1) n_a) (Zhou et al. 2016). With
A_c = s_c / (n_a n_w) and B_c = s_c (b_c - mu_c) + beta_c, q >= j <=> n_a (A_c Z + B_c) > j - 1/2, so the
next codes are a count of per-channel comparators (the `levels` op), j = 1..n_a:

    A_c > 0: q = sum_j [Z >= theta_cj], theta_cj = floor(T_cj) + 1,  T_cj = ((j - 1/2) / n_a - B_c) / A_c
    A_c < 0: q = sum_j [Z <= theta_cj], theta_cj = ceil(T_cj) - 1;    A_c = 0: q = const_c.

The ReLU disappears into clip(., 0, 1); a max-pool commutes with the non-decreasing quantizer, so it runs on
the integer codes. Exact ties (n_a y == j - 1/2 exactly, where round() goes to even) are not modelled.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cimnas.deploy.fixed_point import logit_bias
from cimnas.errors import CimnasError, check
from cimnas.nn.fusion import _bn_affine
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.refactor import execution_order

PASS_THROUGH = (nn.ReLU, nn.Identity, nn.Flatten)


def level_thresholds(scale: torch.Tensor, offset: torch.Tensor, n: int, bound: int):
    """(theta (C, n) int64, mode (C,) int8, const (C,) int64) of the `levels` op (module docstring)."""
    j = torch.arange(1, n + 1, dtype=torch.float64).view(1, -1)
    a, b = scale.double().view(-1, 1), offset.double().view(-1, 1)
    safe = torch.where(a == 0, torch.ones_like(a), a)
    t = ((j - 0.5) / n - b) / safe
    theta = torch.where(a > 0, torch.floor(t) + 1, torch.ceil(t) - 1)
    theta = torch.where(torch.isfinite(theta), theta, torch.sign(theta) * bound).clamp(-bound, bound)
    mode = torch.sign(scale.double()).to(torch.int8)
    const = torch.round(torch.clamp(offset.double(), 0, 1) * n).long()
    theta = torch.where(a == 0, torch.zeros_like(theta), theta)
    return theta.long(), mode, const


def _affine(layer: QConv2d | QLinear, bn: _BatchNorm | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_c, B_c) of y = A_c Z + B_c for the layer's output after its BN (module docstring)."""
    n_a, n_w = 2**layer.input_quantizer.bits - 1, 2**layer.weight_quantizer.bits - 1
    c = int(layer.active_weight().shape[0])
    b = layer.active_bias()
    b = torch.zeros(c, dtype=torch.float64) if b is None else b.detach().double()
    if bn is None:
        return torch.full((c,), 1.0 / (n_a * n_w), dtype=torch.float64), b
    s, mu, beta = _bn_affine(bn, c)
    return s / (n_a * n_w), s * (b - mu) + beta


def lower_kbit(b, model: nn.Module) -> None:
    """Add the ops of a k-bit chain to the `lower._Builder` b (module docstring)."""
    check(not hasattr(model, "blocks"), f"k-bit export: {type(model).__name__} has residual blocks; the k-bit "
          "export covers chains (MLP, LeNet-5); export a binarized ResNet (model.precision: binary)")
    order = execution_order(model, tuple(model.input_shape))
    q = [i for i, (_, m) in enumerate(order) if isinstance(m, QConv2d | QLinear)]
    check(not any(isinstance(m, nn.MaxPool2d) for _, m in order[: q[0]]), "a max-pool before the first layer")
    t = b.encode(order[q[0]][0])
    for n, i in enumerate(q):
        name, layer = order[i]
        t = b.crossbar(name, t)
        if n == len(q) - 1:
            n_a, n_w = 2**layer.input_quantizer.bits - 1, 2**layer.weight_quantizer.bits - 1
            bias = logit_bias(layer.active_bias(), 1.0 / (n_a * n_w), int(layer.active_weight().shape[0]))
            arr = b.array("logits.bias_int", bias)
            b.op("logits", "logits", [t], classes=int(bias.numel()), shift=16, arrays=[arr])
            return
        bn, pools = None, []
        for mname, m in order[i + 1: q[n + 1]]:
            if isinstance(m, _BatchNorm) and bn is None and not pools:
                bn = m
            elif isinstance(m, nn.MaxPool2d):
                pools.append((mname, m))
            elif not isinstance(m, PASS_THROUGH):
                raise CimnasError(f"k-bit export: {mname} ({type(m).__name__}) between two layers is not "
                                  "supported (BN, ReLU and max-pool are); build the model with activation relu")
        a, off = _affine(layer, bn)
        n_next = 2 ** order[q[n + 1]][1].input_quantizer.bits - 1
        fan_in = int(layer.active_weight()[0].numel())
        theta, mode, const = level_thresholds(a, off, n_next, n_next * (2**layer.weight_quantizer.bits) * fan_in + 1)
        base = f"{name}.out"
        arrs = [b.array(f"{base}.theta", theta), b.array(f"{base}.mode", mode), b.array(f"{base}.const", const)]
        t = b.op("levels", f"{base}.codes", [t], channels=int(theta.shape[0]), levels=n_next, arrays=arrs)
        for pname, p in pools:
            k, s, pad = (p.kernel_size, p.stride, p.padding)
            check(isinstance(k, int) and isinstance(s, int) and pad == 0 and p.dilation == 1 and not p.ceil_mode,
                  f"k-bit export: max-pool {pname} must be square with no padding")
            t = b.op("maxpool", f"{pname}.out", [t], kernel=k, stride=s)
