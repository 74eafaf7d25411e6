"""The per-tile crossbar dataflow: what the crossbars and their periphery compute, layer by layer.

A mapped layer's unrolled weight (rows = k*k*C_in in PyTorch's (c, i, j) order, whole k x k kernels per tile,
`spec.channels_per_tile`) is split into row tiles; each tile's rows are read in row groups of `rows_per_read`
word lines; every input code is fed bit-serially through the DAC (`spec.dac_bits` per cycle); every slice of
`bits_per_cell` bits and both arrays of the differential pair are read separately; each read's column current
(unit currents: one level step times one input unit) goes through the ADC (`periphery.adc`); the digital side
shifts and adds slices (2^(b s)) and cycles (2^(dac c)) and sums the tiles' partial sums:

    y[n, o] = x_scale * w_scale * sum_{tile, group} sum_c 2^(dac c) sum_s 2^(b s)
              (ADC(I+_{s,c,group}[n, o]) - ADC(I-_{s,c,group}[n, o]))

Two implementations of the same sum:
- `reference_forward(ml, x_codes)`: on unrolled inputs with explicit loops (the readable one, and the test oracle);
- `tile_forward(...)`: the fast one used inside Monte-Carlo trials: per row group one convolution (or linear)
  of the bit planes of all DAC cycles (stacked on the batch axis) with the masked conductances of all slices and
  both arrays (stacked on the output axis), so a binary layer costs one conv call per row group. It runs on any
  device and batches like the rest of the model.

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

from cimnas.hardware.energy import parallel_rows
from cimnas.hardware.periphery import PeripheryConfig, adc, dac


def _tile_rows(ml) -> tuple[int, int]:
    """(rows per tile, k*k) of a mapped layer."""
    if len(ml.weight_shape) == 4:
        k2 = ml.kernel_size**2
        return ml.spec.channels_per_tile(ml.kernel_size) * k2, k2
    return ml.spec.rows, 1


def reference_forward(ml, x_codes: torch.Tensor, adc_on: bool = False, g_pos: torch.Tensor | None = None,
                      g_neg: torch.Tensor | None = None) -> torch.Tensor:
    """Matrix-vector products on the crossbars for unrolled integer inputs x_codes (N, rows) -> (N, C_out) in the
    integer domain (sum_r x_r code_{o,r}; multiply by the weight and activation scales for real units). With
    adc_on each array's read of `energy.parallel_rows(spec)` rows is converted by a spec.adc_bits ADC with one
    unit current per LSB (`periphery.adc`)."""
    spec = ml.spec
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


def tile_forward(ml, g_pos: torch.Tensor, g_neg: torch.Tensor, x: torch.Tensor, periphery: PeripheryConfig,
                 gen: torch.Generator | None = None) -> torch.Tensor:
    """The layer's output (real units, bias added) computed through its tiles, DAC and ADC (module doc).
    `g_pos` / `g_neg`: this trial's conductances (siemens, (slices, C_out, rows)); `gen` draws out_noise."""
    spec, layer = ml.spec, ml.layer
    conv = len(ml.weight_shape) == 4
    codes, x_scale, code_bits = _input_codes(layer, x)
    if code_bits:
        codes = dac(codes, code_bits, periphery.input_bits)
        n_cycles, step = math.ceil(code_bits / spec.dac_bits), spec.dac_bits
        planes = [torch.floor(codes / 2 ** (c * step)) % (2**step) for c in range(n_cycles)]
    else:
        n_cycles, step, planes = 1, 0, [codes]
    xb = torch.cat(planes, 0) if n_cycles > 1 else planes[0]  # (cycles * N, C_in, ...)
    dg = spec.g_max_s - spec.g_min_s
    levels = torch.cat([g_pos, g_neg], 1).sub(spec.g_min_s).mul_(spec.cell_levels / dg)  # (S, 2 C_out, rows)
    s_, c2, rows = levels.shape
    w_all = levels.reshape(s_ * c2, *((ml.weight_shape[1:]) if conv else (rows,))).to(xb.dtype)
    rows_per_tile, k2 = _tile_rows(ml)
    bits = periphery.adc_bits or spec.adc_bits
    pr = periphery.rows_per_read or parallel_rows(spec if periphery.adc_bits is None else
                                                  _with_adc_bits(spec, bits))
    acc = None
    for t0 in range(0, rows, rows_per_tile):
        t1 = min(rows, t0 + rows_per_tile)
        for a in range(t0, t1, pr):
            b = min(t1, a + pr)
            c0, c1 = a // k2, (b - 1) // k2 + 1  # input channels touched by rows [a, b)
            w = w_all[:, c0:c1]
            if conv and (a % k2 or b % k2):  # a group that cuts a kernel: mask the rows outside it
                mask = torch.zeros((c1 - c0) * k2, dtype=w.dtype, device=w.device)
                mask[a - c0 * k2:b - c0 * k2] = 1
                w = w * mask.view(1, c1 - c0, *ml.weight_shape[2:])
            xs = xb[:, c0:c1]
            cur = (F.conv2d(xs, w, None, layer.stride, layer.padding) if conv else F.linear(xs, w))
            if not code_bits:  # float inputs (no integer code, e.g. a float first layer): read exactly
                acc = cur if acc is None else acc + cur
                continue
            if periphery.out_noise:
                cur = cur + torch.randn(cur.shape, generator=gen, device=gen.device if gen is not None else None,
                                        dtype=cur.dtype).to(cur.device) * periphery.out_noise
            cur, _ = adc(cur, bits, periphery.adc_full_scale)
            acc = cur if acc is None else acc + cur
    # acc: (cycles * N, S * 2 C_out, ...) -> shift-add cycles and slices, subtract the arrays
    n = x.shape[0]
    acc = acc.reshape(n_cycles, n, s_, 2, c2 // 2, *acc.shape[2:])
    cyc = (2.0 ** (step * torch.arange(n_cycles, device=acc.device, dtype=acc.dtype)))
    sl = (2.0 ** (spec.bits_per_cell * torch.arange(s_, device=acc.device, dtype=acc.dtype)))
    acc = torch.einsum("cnsao...,c,s->nao...", acc, cyc, sl)
    y = (acc[:, 0] - acc[:, 1]) * (ml.scale.to(acc.dtype) * x_scale)
    bias = layer.active_bias()
    if bias is not None:
        y = y + (bias.view(1, -1, 1, 1) if conv else bias)
    return y


def _with_adc_bits(spec, bits: int):
    import dataclasses

    return dataclasses.replace(spec, adc_bits=bits)


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
