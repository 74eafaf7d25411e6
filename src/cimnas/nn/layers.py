"""Quantized and slimmable layers.

`QConv2d` / `QLinear` receive an input quantizer and a weight quantizer (STYLE.md, larq).
Every conv/FC layer in cimnas models is one of these (float layers use identity quantizers), so
hardware effects and super-net slicing apply to all of them the same way:

- slicing: `layer.active_in` / `layer.active_out` (None = all) select the first channels of the
  weight, as in slimmable networks; the super-net sets them per sub-net.
- hardware hook: `layer.weight_override` (None = off) replaces the quantized weight in the
  forward pass with a tensor the hardware model computed (mapped, noisy, faulty conductances read
  back as weights). It is set once per Monte-Carlo trial, never per batch, and needs no deep copy.
- conversion (aihwkit's `from_digital`, cimnas.nn.convert): `QConv2d.from_digital(conv, rule)` /
  `QLinear.from_digital(linear, rule)` build the crossbar layer of a plain `nn.Conv2d` / `nn.Linear`
  with every geometry argument (groups, dilation, padding mode, bias) and the very same weight
  Parameters, quantized as `rule.quantizers()` says.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cimnas.nn.quantizers import Identity, Quantizer


class _QMixin:
    input_quantizer: Quantizer
    weight_quantizer: Quantizer
    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_q(self, input_quantizer, weight_quantizer):
        self.input_quantizer = input_quantizer if input_quantizer is not None else Identity()
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else Identity()
        self.active_in: int | None = None
        self.active_out: int | None = None
        self.in_index: torch.Tensor | None = None  # input positions kept when not a prefix (see active_weight)
        self.weight_override: torch.Tensor | None = None

    def active_weight(self) -> torch.Tensor:
        """The real-valued weight of the active (sliced) channels. `in_index` (with `active_in` = its length)
        keeps input positions that are not a prefix: the consumer of a concatenation whose parts are each
        sliced to their first channels (cimnas.nn.groups)."""
        w = self.weight
        if self.active_out is not None:
            w = w[: self.active_out]
        if self.in_index is not None:
            w = w.index_select(1, self.in_index.to(w.device))
        elif self.active_in is not None:
            w = w[:, : self.active_in]
        return w

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.active_out is None:
            return self.bias
        return self.bias[: self.active_out]

    def quantized_weight(self) -> torch.Tensor:
        """The weight the layer computes with (quantized, sliced), before hardware effects."""
        return self.weight_quantizer(self.active_weight())

    def effective_weight(self) -> torch.Tensor:
        if self.weight_override is not None:
            return self.weight_override
        return self.quantized_weight()


class QConv2d(_QMixin, nn.Conv2d):
    """Conv2d with input/weight quantizers, channel slicing and a hardware weight hook.

    y = conv(q_in(x), q_w(W)[:c_out, :c_in]) (+ b), with the layer's stride, padding (and padding mode),
    dilation and groups (nn.Conv2d._conv_forward).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: Any = 1,
                 padding: Any = None, bias: bool = False,
                 input_quantizer: Quantizer | None = None, weight_quantizer: Quantizer | None = None,
                 dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros"):
        if padding is None:  # "same" for odd kernels
            padding = kernel_size // 2 if isinstance(kernel_size, int) else tuple(k // 2 for k in kernel_size)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
                         dilation=dilation, groups=groups, padding_mode=padding_mode)
        self._init_q(input_quantizer, weight_quantizer)

    @classmethod
    def from_digital(cls, layer: nn.Conv2d, rule: Any) -> QConv2d:
        """The crossbar form of a plain `nn.Conv2d`: same geometry, same weight and bias Parameters (shared, not
        copied), quantizers from `rule.quantizers()` -> (input quantizer, weight quantizer)."""
        iq, wq = rule.quantizers()
        with torch.device("meta"):  # no second allocation / init: the Parameters are taken over below
            new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                      padding=layer.padding, bias=layer.bias is not None, input_quantizer=iq, weight_quantizer=wq,
                      dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode)
        new.weight, new.bias = layer.weight, layer.bias
        new.train(layer.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        return self._conv_forward(x, self.effective_weight(), self.active_bias())


class QLinear(_QMixin, nn.Linear):
    """Linear with input/weight quantizers, feature slicing and a hardware weight hook."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 input_quantizer: Quantizer | None = None, weight_quantizer: Quantizer | None = None):
        super().__init__(in_features, out_features, bias=bias)
        self._init_q(input_quantizer, weight_quantizer)

    @classmethod
    def from_digital(cls, layer: nn.Linear, rule: Any) -> QLinear:
        """The crossbar form of a plain `nn.Linear` (same weight and bias Parameters; see QConv2d.from_digital)."""
        iq, wq = rule.quantizers()
        with torch.device("meta"):
            new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, input_quantizer=iq,
                      weight_quantizer=wq)
        new.weight, new.bias = layer.weight, layer.bias
        new.train(layer.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        return F.linear(x, self.effective_weight(), self.active_bias())


_REDUCED = (torch.bfloat16, torch.float16)


def _bn_input(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """x in float32 when it arrives in bf16/fp16 (autocast convolutions) and the BN is float32:
    batch statistics, running statistics and the output (which a binary quantizer thresholds at
    0.5) are then computed exactly as without autocast from the same conv output."""
    ref = bn.running_mean if bn.running_mean is not None else bn.weight
    if x.dtype in _REDUCED and ref is not None and ref.dtype == torch.float32:
        return x.float()
    return x


def _sliced_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                       index: torch.Tensor | None = None) -> torch.Tensor:
    """Batch norm of x (N, C, ...) with the first C channels of `bn`'s running statistics and affine
    parameters (C < bn.num_features: a slimmable layer serving a narrower sub-net), or with the channels
    `index` (a BN after a concatenation whose parts are each sliced to their first channels, cimnas.nn.groups;
    the running statistics of those channels are written back)."""
    c = x.shape[1]
    pick = (lambda t: t[:c]) if index is None else (lambda t: t[index.to(t.device)])
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    if bn.training and momentum is None:  # cumulative moving average
        momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch = bn.training or not bn.track_running_stats
    mean = pick(bn.running_mean) if bn.running_mean is not None else None  # a view (prefix) or a copy (index)
    var = pick(bn.running_var) if bn.running_var is not None else None
    out = F.batch_norm(x, mean, var, pick(bn.weight) if bn.affine else None, pick(bn.bias) if bn.affine else None,
                       use_batch, momentum if momentum is not None else 0.0, bn.eps)
    if index is not None and mean is not None and bn.training:
        with torch.no_grad():
            bn.running_mean[index.to(mean.device)] = mean
            bn.running_var[index.to(var.device)] = var
    return out


class SlimmableBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that serves the first C channels of its input (running stats and affine sliced to the input),
    or the channels `channel_index` when set (after a concatenation, cimnas.nn.groups).

    For non-uniform super-nets the running statistics are recalibrated per sub-net before
    evaluation (slimmable networks / once-for-all), see cimnas.nn.supernet.
    """

    channel_index: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _bn_input(self, x)
        if x.shape[1] == self.num_features:
            return super().forward(x)
        return _sliced_batch_norm(self, x, self.channel_index)


class SlimmableBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d sliced to the incoming feature count (same rules as SlimmableBatchNorm2d)."""

    channel_index: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _bn_input(self, x)
        if x.shape[1] == self.num_features:
            return super().forward(x)
        return _sliced_batch_norm(self, x, self.channel_index)


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad or truncate the channel dim of `x` to `channels` (option-A shortcut; HAWIS keeps
    residual additions of mismatched widths free of floating-point ops this way)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c > channels:
        return x[:, :channels]
    pad = x.new_zeros((x.shape[0], channels - c) + tuple(x.shape[2:]))
    return torch.cat([x, pad], dim=1)


class ThermometerEncoding(nn.Module):
    """Thermometer code of an input in [0, 1]: channel c becomes `levels` binary planes
    [x_c > (i + 0.5) / levels] for i in 0..levels-1 (the HAWIS authors' public code uses 32 levels
    with thresholds (i + 0.5) * 8 / 255 on RGB, i.e. 96 binary channels for CIFAR).
    """

    def __init__(self, levels: int = 32):
        super().__init__()
        self.levels = int(levels)
        self.register_buffer("thresholds", (torch.arange(self.levels) + 0.5) / self.levels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C * levels, H, W), values in {0, 1}
        t = self.thresholds.view(1, 1, -1, 1, 1)
        out = (x.unsqueeze(2) > t).to(x.dtype)
        return out.flatten(1, 2)


def quant_layers(model: nn.Module) -> list[tuple[str, QConv2d | QLinear]]:
    """All (name, layer) pairs of QConv2d / QLinear in forward-definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QConv2d | QLinear)]
