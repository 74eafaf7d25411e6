"""The quantized CNN of the UAE search space (UAE Table 2; NACIM/QuantNAS style).

    x (N, C, H, W) in [0, 1]
    -> [QConv2d(k_i, c_i) -> BN -> ReLU (-> 2x2 max-pool after the listed convs)] x n_conv
    -> flatten -> [QLinear(fc_hidden) -> ReLU] x (n_fc - 1) -> QLinear(num_classes)

Quantization (signed fixed point, `cimnas.nn.quantizers.FixedPoint`, straight-through
gradients): conv i computes with fixed_point(int_i, frac_i) weights, and its output activations
are fixed_point(int_i, frac_i) values (the next layer's input quantizer), as in NACIM where each
layer's integer/fraction bits set both its weights and its outputs. The image enters through an
unsigned `input_bits` quantizer (the DACs of the first layer); FC layers use the fixed
`fc_int_bits` / `fc_frac_bits`. A 0-bit word (int 0, frac 0) has no level but zero, so it is
raised to 1 fraction bit. Works for any input size (digits 1x8x8, MNIST 1x28x28, CIFAR 3x32x32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cimnas.errors import check
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.models._common import MODELS
from cimnas.nn.quantizers import DoReFaActivation, FixedPoint


def _fixed(int_bits: int, frac_bits: int) -> FixedPoint:
    if int_bits + frac_bits < 1:  # a 0-bit word can only hold 0: give it one fraction bit
        frac_bits = 1
    return FixedPoint(int_bits, frac_bits)


class UAECNN(nn.Module):
    """Fixed-point CNN child of the UAE search space (6 conv + 2 FC in the paper)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, channels: list[int],
                 kernels: list[int], int_bits: list[int], frac_bits: list[int], fc_hidden: int = 1024,
                 n_fc: int = 2, fc_int_bits: int = 2, fc_frac_bits: int = 6, input_bits: int = 8,
                 pool_after: list[int] | tuple[int, ...] = (2, 4)):
        super().__init__()
        n = len(channels)
        check(n >= 1 and len(kernels) == n and len(int_bits) == n and len(frac_bits) == n,
              "uae_cnn needs channels, kernels, int_bits and frac_bits lists of the same non-zero length")
        check(n_fc >= 1, f"uae_cnn needs n_fc >= 1, got {n_fc}")
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.pool = []
        c_in, hw = in_channels, int(image_size)
        in_q = DoReFaActivation(input_bits)  # image pixels in [0, 1] on the DACs
        for i in range(n):
            self.convs.append(QConv2d(c_in, channels[i], kernels[i], padding=kernels[i] // 2, bias=False,
                                      input_quantizer=in_q, weight_quantizer=_fixed(int_bits[i], frac_bits[i])))
            self.bns.append(nn.BatchNorm2d(channels[i]))
            pool = (i + 1) in pool_after and hw >= 4
            self.pool.append(pool)
            hw = hw // 2 if pool else hw
            c_in = channels[i]
            in_q = _fixed(int_bits[i], frac_bits[i])  # layer i's output activations
        self.fcs = nn.ModuleList()
        f_in = c_in * hw * hw
        for j in range(n_fc):
            last = j == n_fc - 1
            f_out = num_classes if last else fc_hidden
            self.fcs.append(QLinear(f_in, f_out, bias=True, input_quantizer=in_q,
                                    weight_quantizer=_fixed(fc_int_bits, fc_frac_bits)))
            in_q = _fixed(fc_int_bits, fc_frac_bits)
            f_in = f_out
        self.arch_meta = {"name": "uae_cnn", "in_channels": in_channels, "num_classes": num_classes,
                          "image_size": image_size, "channels": list(channels), "kernels": list(kernels),
                          "int_bits": list(int_bits), "frac_bits": list(frac_bits), "fc_hidden": fc_hidden,
                          "n_fc": n_fc, "fc_int_bits": fc_int_bits, "fc_frac_bits": fc_frac_bits,
                          "input_bits": input_bits, "pool_after": list(pool_after)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn, pool in zip(self.convs, self.bns, self.pool, strict=True):
            x = F.relu(bn(conv(x)))  # quantized by the next layer's input quantizer
            if pool:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1)
        for j, fc in enumerate(self.fcs):
            x = fc(x)
            if j < len(self.fcs) - 1:
                x = F.relu(x)
        return x


_BUILD_KEYS = ("channels", "kernels", "int_bits", "frac_bits", "fc_hidden", "n_fc", "fc_int_bits",
               "fc_frac_bits", "input_bits", "pool_after")


@MODELS.register("uae_cnn", "UAE fixed-point CNN (6 conv + 2 FC, per-layer channels/kernel/bits)")
def build_uae_cnn(*, in_channels: int, num_classes: int, image_size: int, **kw) -> UAECNN:
    """UAE Table-2 fixed-point CNN; kwargs: channels, kernels, int_bits, frac_bits (per conv),
    fc_hidden, n_fc, fc_int_bits, fc_frac_bits, input_bits, pool_after. Generic `build_model`
    keywords that do not apply (widths, precision, bits, ...) are ignored."""
    args = {k: kw[k] for k in _BUILD_KEYS if k in kw and kw[k] is not None}
    check(all(k in args for k in _BUILD_KEYS[:4]),
          "uae_cnn needs channels, kernels, int_bits and frac_bits (one entry per conv layer)")
    return UAECNN(in_channels, num_classes, image_size, **args)

