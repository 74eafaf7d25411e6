"""Optional TensorBoard logging of a run's epochs and episodes (the `tensorboard` extra; off by default).

A run whose config says `tensorboard: true` (`--set tensorboard=true` on `cimnas train`, `hawis run`, `uae search`)
gets RUN/tensorboard/ with one scalar per number of every record the run appends to its JSONL logs (`cimnas
train` epochs, HAWIS episodes, UAE episodes) and of HAWIS stage A's epochs, tagged `<log>/<field>` and stepped by
the record's epoch or episode. The JSONL logs stay the record of the run; TensorBoard only mirrors them.
"""

from __future__ import annotations

from typing import Any

from cimnas.errors import CimnasError

MISSING = "tensorboard: true needs the tensorboard extra: pip install 'cimnas[tensorboard]'"


def writer_class() -> type:
    """torch's SummaryWriter; a one-line error naming the extra when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's wrapper imports the tensorboard package
        raise CimnasError(MISSING) from e
    return SummaryWriter


def numbers(record: dict) -> dict[str, float]:
    """The numeric fields of a record, one nested level deep (`noisy.mean`), booleans and lists left out."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": float(vv) for kk, vv in v.items()
                        if isinstance(vv, int | float) and not isinstance(vv, bool)})
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def step_of(record: dict, default: int) -> int:
    """The record's epoch (cimnas train, stage A) or episode; `default` when it names neither."""
    for key in ("epoch", "episode"):
        if isinstance(record.get(key), int) and not isinstance(record.get(key), bool):
            return int(record[key])
    return default


def log_scalars(writer: Any, group: str, record: dict, step: int) -> None:
    for k, v in numbers(record).items():
        if k not in ("epoch", "episode"):
            writer.add_scalar(f"{group}/{k}", v, step)
    writer.flush()
