"""The per-tile crossbar dataflow: what the crossbars and their periphery compute, layer by layer.

A mapped layer's unrolled weight (rows = k*k*C_in in PyTorch's (c, i, j) order, whole k x k kernels per tile,
`spec.channels_per_tile`) is split into row tiles; each tile's rows are read in row groups of `rows_per_read`
word lines (`read_rows`); every input code is fed bit-serially through the DAC (`spec.dac_bits` per cycle); every
slice of `bits_per_cell` bits is read separately; each read's column current (unit currents: one level step
times one input unit) goes through the ADC (`periphery.adc`), either as the analog difference of the pair
(`periphery.subtraction: analog`, MNSIM's Sub_Position 0, one signed conversion) or array by array (`digital`,
two unsigned conversions); the digital side shifts and adds slices (2^(b s)) and cycles (2^(dac c)) and sums the
tiles' partial sums:

    y[n, o] = x_scale * w_scale * sum_{tile, group} sum_c 2^(dac c) sum_s 2^(b s) ADC(I+ - I-)      (analog)
                                                             ... (ADC(I+) - ADC(I-))                 (digital)

Two implementations:
- `reference_forward(ml, x_codes)`: digital subtraction on unrolled inputs with explicit loops (the readable one,
  `MappedLayer.crossbar_forward`, and the test oracle);
- `tile_forward(...)`: the fast one used inside Monte-Carlo trials: per row group one convolution of the bit
  planes of all DAC cycles (stacked on the batch axis) with the masked conductances of all slices (and, for
  digital subtraction, both arrays) stacked on the output axis, so a binary layer costs about one conv of the
  clean model. It runs on any device.

`dataflow_forwards(mapped, conductances, periphery, gen)` swaps every mapped layer's forward for `tile_forward`
with one trial's conductances for the duration of a block (restored on exit), the way `weight_overrides` swaps
weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from cimnas.errors import check
from cimnas.hardware.energy import parallel_rows
from cimnas.hardware.periphery import PeripheryConfig, adc, dac


def _tile_rows(ml) -> tuple[int, int]:
    """(rows per tile, k*k) of a mapped layer."""
    if len(ml.weight_shape) == 4:
        k2 = ml.kernel_size**2
        return ml.spec.channels_per_tile(ml.kernel_size) * k2, k2
    return ml.spec.rows, 1


def _check_dense(ml) -> None:
    """The dataflow simulates dense layers; a grouped conv (a converted model's depthwise layer) is refused by
    name rather than computed wrong."""
    check(getattr(ml.layer, "groups", 1) == 1, f"layer {ml.name}: the dataflow simulator handles dense layers only "
          "(groups = 1); use periphery.mode=ideal for grouped convolutions")


def reference_forward(ml, x_codes: torch.Tensor, adc_on: bool = False, g_pos: torch.Tensor | None = None,
                      g_neg: torch.Tensor | None = None) -> torch.Tensor:
    """Matrix-vector products on the crossbars for unrolled integer inputs x_codes (N, rows) -> (N, C_out) in the
    integer domain (sum_r x_r code_{o,r}; multiply by the weight and activation scales for real units). With
    adc_on each array's read of `energy.parallel_rows(spec)` rows is converted by a spec.adc_bits ADC with one
    unit current per LSB (`periphery.adc`)."""
    spec = ml.spec
    _check_dense(ml)
    g_pos = ml.g_pos if g_pos is None else g_pos
    g_neg = ml.g_neg if g_neg is None else g_neg
    rows_per_tile, _ = _tile_rows(ml)
    x_bits = max(1, int(x_codes.max().item()).bit_length()) if x_codes.numel() else 1
    n_cycles = math.ceil(x_bits / spec.dac_bits)
    dac_mask = 2**spec.dac_bits - 1
    pos = (g_pos - spec.g_min_s) / (spec.g_max_s - spec.g_min_s) * spec.cell_levels
    neg = (g_neg - spec.g_min_s) / (spec.g_max_s - spec.g_min_s) * spec.cell_levels
    sig = ml.significance().view(-1)
    out = torch.zeros(x_codes.shape[0], pos.shape[1], dtype=torch.float64, device=x_codes.device)
    x = x_codes.to(torch.float64)
    pr = parallel_rows(spec)  # the same read rounds the energy model charges
    for r0 in range(0, ml.rows, rows_per_tile):  # row tiles: partial sums added digitally
        for c in range(n_cycles):  # bit-serial input through the DAC
            xin = torch.floor(x[:, r0:r0 + rows_per_tile] / 2 ** (c * spec.dac_bits)) % (dac_mask + 1)
            for s in range(ml.slices):
                for arr, sign in ((pos, 1.0), (neg, -1.0)):
                    g = arr[s, :, r0:r0 + rows_per_tile].to(torch.float64)
                    if adc_on:  # read in row groups that fit the ADC range
                        cur = sum(adc(xin[:, a:a + pr] @ g[:, a:a + pr].T, spec.adc_bits)[0]
                                  for a in range(0, g.shape[1], pr))
                    else:
                        cur = xin @ g.T
                    out += sign * cur * sig[s].item() * 2 ** (c * spec.dac_bits)
    return out


def _input_codes(layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float, int]:
    """(integer input codes, their scale, code bits) of a layer's input; float inputs (no integer form) go in
    as one analog cycle (codes = values, scale 1, 0 bits) and are read without DAC / ADC effects (not modelled:
    a float input has no code to convert)."""
    q = layer.input_quantizer
    if getattr(q, "bits", None) is None or not hasattr(q, "to_integer"):
        return layer.input_quantizer(x), 1.0, 0
    codes, scale = q.to_integer(x)
    return codes, scale, int(q.bits)


def read_rows(spec, periphery: PeripheryConfig) -> int:
    """Word lines summed per ADC conversion: `periphery.rows_per_read`, or the spec's `rows_per_read` capped so an
    exact read fits the ADC's codes (2^b - 1 unsigned for digital subtraction, `energy.parallel_rows`; 2^(b-1) - 1
    either sign for analog subtraction)."""
    if periphery.rows_per_read is not None:
        return periphery.rows_per_read
    bits = periphery.adc_bits or spec.adc_bits
    unit = spec.cell_levels * (2**spec.dac_bits - 1)
    top = 2 ** (bits - 1) - 1 if periphery.subtraction == "analog" else 2**bits - 1
    return max(1, min(spec.rows, spec.rows_per_read, top // unit))


def _group_weights(ml, w_all: torch.Tensor, periphery: PeripheryConfig) -> list[tuple[int, int, torch.Tensor]]:
    """(first input channel, end channel, weight) of every row group of every tile; a group that cuts a kernel
    keeps only its rows (the others masked to 0). Without `periphery.rows_per_read` a group holds whole kernels
    (the capped read size rounded down to a multiple of k*k), so no kernel is cut."""
    rows_per_tile, k2 = _tile_rows(ml)
    pr = read_rows(ml.spec, periphery)
    if periphery.rows_per_read is None and pr >= k2:  # by default a read holds whole k x k kernels (no mask)
        pr -= pr % k2
    rows = ml.rows
    out = []
    for t0 in range(0, rows, rows_per_tile):
        t1 = min(rows, t0 + rows_per_tile)
        for a in range(t0, t1, pr):
            b = min(t1, a + pr)
            c0, c1 = a // k2, (b - 1) // k2 + 1  # input channels touched by rows [a, b)
            w = w_all[:, c0:c1]
            if a % k2 or b % k2:
                mask = torch.zeros((c1 - c0) * k2, dtype=w.dtype, device=w.device)
                mask[a - c0 * k2:b - c0 * k2] = 1
                w = w * mask.view(1, c1 - c0, *w.shape[2:])
            out.append((c0, c1, w))
    return out


def tile_forward(ml, g_pos: torch.Tensor, g_neg: torch.Tensor, x: torch.Tensor, periphery: PeripheryConfig,
                 gen: torch.Generator | None = None) -> torch.Tensor:
    """The layer's output (real units, bias added) computed through its tiles, DAC and ADC (module doc).
    `g_pos` / `g_neg`: this trial's conductances (siemens, (slices, C_out, rows)); `gen` draws out_noise.
    Analog subtraction (MNSIM's Sub_Position 0): the ADC converts I+ - I- of a column pair (signed);
    digital: each array's column is converted (unsigned) and subtracted after the ADC."""
    spec, layer = ml.spec, ml.layer
    _check_dense(ml)
    conv = len(ml.weight_shape) == 4
    codes, x_scale, code_bits = _input_codes(layer, x)
    step = spec.dac_bits
    n_cycles = math.ceil(code_bits / step) if code_bits else 1
    if code_bits:
        codes = dac(codes, code_bits, periphery.input_bits)
    xb = codes if n_cycles == 1 else torch.cat([torch.floor(codes / 2 ** (c * step)) % (2**step)
                                                for c in range(n_cycles)], 0)  # (cycles * N, C_in, ...)
    scale = spec.cell_levels / (spec.g_max_s - spec.g_min_s)
    analog = periphery.subtraction == "analog"
    levels = ((g_pos - g_neg) * scale if analog else
              torch.cat([g_pos, g_neg], 1).sub(spec.g_min_s).mul_(scale))  # (S, A * C_out, rows)
    s_, ca, rows = levels.shape
    w_all = levels.reshape(s_ * ca, *((ml.weight_shape[1:]) if conv else (rows, 1, 1))).to(xb.dtype)
    if not conv:
        xb = xb.view(*xb.shape, 1, 1)
    bits = periphery.adc_bits or spec.adc_bits
    acc = None
    for c0, c1, w in _group_weights(ml, w_all, periphery):
        cur = (F.conv2d(xb[:, c0:c1], w, None, layer.stride, layer.padding, layer.dilation) if conv
               else F.conv2d(xb[:, c0:c1], w))
        if code_bits:  # float inputs (no integer code, e.g. a float first layer) are read exactly
            if periphery.out_noise:
                cur = cur + torch.randn(cur.shape, generator=gen, dtype=cur.dtype,
                                        device=gen.device if gen is not None else cur.device).to(cur.device
                                                                                               ).mul_(periphery.out_noise)
            cur = adc(cur, bits, periphery.adc_full_scale, signed=analog, count=False, inplace=True)[0]
        acc = cur if acc is None else acc.add_(cur)
    if not conv:
        acc = acc.flatten(1)
    n = x.shape[0]
    if n_cycles > 1 or s_ > 1:  # shift-add of DAC cycles and slices
        acc = acc.reshape(n_cycles, n, s_, ca, *acc.shape[2:])
        cyc = 2.0 ** (step * torch.arange(n_cycles, device=acc.device, dtype=acc.dtype))
        sl = 2.0 ** (spec.bits_per_cell * torch.arange(s_, device=acc.device, dtype=acc.dtype))
        acc = (acc * cyc.view(-1, *[1] * (acc.dim() - 1))).sum(0)  # (N, S, A * C_out, ...)
        acc = (acc * sl.view(1, -1, *[1] * (acc.dim() - 2))).sum(1)  # (N, A * C_out, ...)
    y = acc if analog else acc[:, : ca // 2] - acc[:, ca // 2:]
    y = y * (ml.scale.to(y.dtype) * x_scale)
    bias = layer.active_bias()
    if bias is not None:
        y = y + (bias.view(1, -1, 1, 1) if conv else bias)
    return y


@contextmanager
def dataflow_forwards(mapped, conductances: Callable[[], dict[str, tuple[torch.Tensor, torch.Tensor]]],
                      periphery: PeripheryConfig, gen: torch.Generator | None = None) -> Iterator[None]:
    """Inside the block every mapped layer computes `tile_forward` with the conductances of `conductances()`,
    called once per forward pass of the model's first mapped layer (a new read: per-read noise is redrawn per
    batch). Each layer's own forward is restored on exit."""
    state: dict = {}
    first = mapped.layers[0].name

    def make(ml):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if ml.name == first or not state:
                state["g"] = conductances()
            gp, gn = state["g"][ml.name]
            return tile_forward(ml, gp, gn, x, periphery, gen)
        return forward

    try:
        for ml in mapped.layers:
            ml.layer.forward = make(ml)
        yield
    finally:
        for ml in mapped.layers:
            if "forward" in vars(ml.layer):
                del ml.layer.forward
