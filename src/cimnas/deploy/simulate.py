"""Run an export with integer arithmetic through the crossbar dataflow (`cimnas simulate`).

Every tensor is an int64 NumPy array: input pixel codes (the dataset's integers, e.g. 0..255), {0,1} planes,
accumulations Z, fixed-point residual streams, integer logits. The one real-valued quantity is the analog
column current of a crossbar array: `column_sums` hands the cell conductances and the unrolled input codes to
the shared crossbar dataflow (`cimnas.hardware.mapping.MappedLayer.crossbar_forward`: row tiles, bit-serial
inputs through the DAC, per-array column sums, optional ADC, shift-add) and rounds its read-out to integers
(with ideal devices the sums are exact integers, so the rounding changes nothing).

Device defects (`cimnas.hardware.defects`, the registered models that act on conductances) are drawn once per
simulated chip, seeded, on the exported arrays' conductances G = Gmin + level / L (Gmax - Gmin).
"""

from __future__ import annotations

import types

import numpy as np
import torch

from cimnas.errors import check
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectModel
from cimnas.hardware.mapping import MappedLayer


def column_sums(g_pos: torch.Tensor, g_neg: torch.Tensor, spec: CrossbarSpec, weight_shape: tuple[int, ...],
                kernel: int, x_codes: np.ndarray, adc: bool) -> np.ndarray:
    """Integer read-out sum_r x_r code_{o,r} of unrolled inputs (N, rows) on one layer's arrays (S, C_out, rows),
    via the shared crossbar dataflow (the only place the simulator touches it)."""
    ml = MappedLayer("export", None, spec, weight_shape, 0, g_pos.shape[0], torch.tensor(1.0), g_pos, g_neg,
                     kernel)
    out = ml.crossbar_forward(torch.from_numpy(x_codes), adc=adc)
    return np.rint(out.numpy()).astype(np.int64)


def _conductances(levels: np.ndarray, spec: CrossbarSpec) -> torch.Tensor:
    return spec.g_min_s + torch.from_numpy(levels).double() / spec.cell_levels * (spec.g_max_s - spec.g_min_s)


def _layer_matrix(images: torch.Tensor, op: dict, spec: CrossbarSpec) -> torch.Tensor:
    """Physical arrays (row tiles, column tiles, S, rows, columns) -> the layer's (S, C_out, R) conductances."""
    rpt, r, c_out = op["rows_per_tile"], op["rows"], op["out_shape"][0]
    out = images.new_empty((images.shape[2], c_out, r))
    for i in range(images.shape[0]):
        for j in range(images.shape[1]):
            rows = min(rpt, r - i * rpt)
            cols = min(spec.columns, c_out - j * spec.columns)
            out[:, j * spec.columns: j * spec.columns + cols, i * rpt: i * rpt + rows] = \
                images[i, j, :, :rows, :cols].transpose(1, 2)
    return out


class Chip:
    """An export programmed onto crossbars (conductances, with defects drawn once), ready to run batches."""

    def __init__(self, doc: dict, arrays: dict[str, np.ndarray], spec: CrossbarSpec,
                 defects: list[DefectModel] = (), seed: int = 0, adc: bool = False):
        self.doc, self.arrays, self.spec, self.adc = doc, arrays, spec, adc
        gen = torch.Generator().manual_seed(int(seed))
        holder = types.SimpleNamespace(spec=spec)  # what the defect hooks read of a mapped layer
        self.g: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for op in doc["ops"]:
            if op["op"] != "crossbar":
                continue
            g_pos = _conductances(arrays[op["arrays"][0]], spec)
            g_neg = _conductances(arrays[op["arrays"][1]], spec)
            for d in defects:
                g_pos, g_neg = d.perturb_conductances(holder, g_pos, g_neg, gen)
            self.g[op["name"]] = (_layer_matrix(g_pos, op, spec), _layer_matrix(g_neg, op, spec))

    # ------------------------------------------------------------ ops
    def _encode(self, op: dict, pixels: np.ndarray, scale: int) -> np.ndarray:
        p = pixels.astype(np.int64)
        if op["layout"] == "flat":
            p = p.reshape(p.shape[0], -1)
        if op["kind"] == "binary":
            return (2 * p > scale).astype(np.int64)  # [p / P > 1/2]
        if op["kind"] == "dorefa":  # round(p / P * n), half to even as torch.round
            num, den = 2 * p * op["levels"] + scale, 2 * scale
            q = num // den
            return q - ((num % den == 0) & (q % 2 == 1))
        lv = op["levels"]
        # plane i: [p / P > (i + 1/2) / L]  <=>  2 L p > (2 i + 1) P
        planes = np.stack([2 * lv * p > (2 * i + 1) * scale for i in range(lv)], axis=2).astype(np.int64)
        return planes.reshape(p.shape[0], -1, *p.shape[2:])  # channel (or feature) c -> c * L + i

    def _crossbar(self, op: dict, x: np.ndarray) -> np.ndarray:
        g_pos, g_neg = self.g[op["name"]]
        c_out = op["out_shape"][0]
        if op["kind"] == "fc":
            x = x.reshape(x.shape[0], -1)
            return column_sums(g_pos, g_neg, self.spec, (c_out, x.shape[1]), 1, x, self.adc)
        k, s, pad = op["kernel"], op["stride"], op["padding"]
        n, c = x.shape[:2]
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        ho, wo = win.shape[2:4]
        rows = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)  # PyTorch's (c, i, j) order
        z = column_sums(g_pos, g_neg, self.spec, (c_out, c, k, k), k, np.ascontiguousarray(rows), self.adc)
        return z.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2)

    def _per_channel(self, a: np.ndarray, like: np.ndarray) -> np.ndarray:
        return a.reshape((1, -1) + (1,) * (like.ndim - 2))

    def run(self, pixels: np.ndarray, scale: int) -> np.ndarray:
        """Integer logits (N, classes) of a batch of integer pixel codes (N, C, H, W) of full scale `scale`."""
        t: dict[str, np.ndarray] = {}
        a = self.arrays
        for op in self.doc["ops"]:
            kind, ins = op["op"], [t[i] for i in op["inputs"]]
            if kind == "encode":
                out = self._encode(op, pixels, scale)
            elif kind == "crossbar":
                out = self._crossbar(op, ins[0])
            elif kind == "compare":
                th, mode, const = (self._per_channel(a[n].astype(np.int64), ins[0]) for n in op["arrays"])
                out = np.where(mode > 0, ins[0] >= th, np.where(mode < 0, ins[0] <= th, const > 0)).astype(np.int64)
            elif kind == "requant":
                m, off = (self._per_channel(a[n], ins[0]) for n in op["arrays"][:2])
                out = _saturate((m * ins[0] + off) >> op["shift"], op["bits"])
            elif kind == "levels":
                th, mode, const = (a[n].astype(np.int64) for n in op["arrays"])
                out = _levels(ins[0], th, mode, const)
            elif kind == "maxpool":
                k, s = op["kernel"], op["stride"]
                out = np.lib.stride_tricks.sliding_window_view(ins[0], (k, k), axis=(2, 3))[:, :, ::s, ::s].max((4, 5))
            elif kind == "stream_code":
                out = (ins[0] >= self._per_channel(a[op["arrays"][0]], ins[0])).astype(np.int64)
            elif kind == "add":
                out = _saturate(ins[0] + _match(ins[1], op["stride"], ins[0].shape[1]), op["bits"])
            else:  # logits
                out = ins[0] * (1 << op["shift"]) + a[op["arrays"][0]].reshape(1, -1)
            t[op["name"]] = out
        return t["logits"]


def _levels(z: np.ndarray, theta: np.ndarray, mode: np.ndarray, const: np.ndarray) -> np.ndarray:
    """k-bit codes: the count of passed comparators per channel (cimnas.deploy.kbit)."""
    shape = (1, -1) + (1,) * (z.ndim - 2)
    out = np.zeros_like(z)
    for j in range(theta.shape[1]):
        th = theta[:, j].reshape(shape)
        m = mode.reshape(shape)
        out += np.where(m > 0, z >= th, np.where(m < 0, z <= th, False))
    return np.where(mode.reshape(shape) == 0, const.reshape(shape), out)


def _saturate(x: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def _match(x: np.ndarray, stride: int, channels: int) -> np.ndarray:
    """Option-A shortcut: subsample by `stride`, zero-pad or truncate to `channels` (cimnas.nn.layers)."""
    x = x[:, :, ::stride, ::stride]
    if x.shape[1] >= channels:
        return x[:, :channels]
    return np.concatenate([x, np.zeros((x.shape[0], channels - x.shape[1], *x.shape[2:]), np.int64)], axis=1)


def predict(chip: Chip, pixels: np.ndarray, scale: float, batch_size: int = 128) -> np.ndarray:
    """argmax of the integer logits, batch by batch (the first index wins ties, as torch.argmax)."""
    check(float(scale).is_integer() and scale >= 1, f"the dataset's pixel scale {scale} is not an integer full "
          "scale; the integer simulator needs integer pixel codes")
    out = [chip.run(pixels[i:i + batch_size], int(scale)).argmax(1) for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)
