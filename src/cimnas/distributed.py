"""Data-parallel training under torchrun: the process group, the rank helpers, the DDP wrapper.

    torchrun --standalone --nproc_per_node 2 -m cimnas train --config ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); `init()` joins the group
(gloo on CPU, NCCL on CUDA, each rank on GPU `LOCAL_RANK`) and returns the device this rank trains on. Without
those variables (a plain `python -m cimnas ...`) it starts nothing and every helper answers as a world of one,
so the same pipeline code runs single-process and under torchrun.

How `cimnas.train.fit` uses it: under an initialised group of more than one process the model is wrapped in
DistributedDataParallel; every rank draws the same seeded permutation and augmentation of each GLOBAL batch
(cfg.batch_size samples) and trains on its contiguous share, the loss scaled so that DDP's gradient average is
the gradient of the global-batch mean; epoch metrics are all-reduced. BatchNorm is per-rank (each rank
normalises its share with its own statistics; the running statistics are rank 0's, broadcast at every
forward and after each epoch): SyncBatchNorm needs CUDA and would replace the slimmable BN layers.
Logging and checkpoints are rank 0's (`is_rank0()`); `fit` calls `on_epoch_end` on rank 0 only.

Decisions taken once (open the run folder, where to resume) are rank 0's: it works inside `rank0_section()`
and sends the outcome with `share(value)`; the other ranks wait in `share()`. If rank 0 fails in that
section (a refused resume), the other ranks get an error marker instead of a value and raise the same one-line
error, so none waits for a broadcast that never comes (`cimnas train`, `cimnas hawis pretrain / retrain`).

A training step that is not fit's default one (HAWIS's sandwich rule: several backwards, one optimizer step)
averages its gradients itself with `average_gradients`.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cimnas.errors import CimnasError, check
from cimnas.utils.seed import resolve_device

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched() -> bool:
    """True when this process was started by torchrun (or a launcher setting the same variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


#: the commands that run data-parallel under torchrun
TORCHRUN_COMMANDS = "`cimnas train`, `cimnas hawis pretrain` and `cimnas hawis retrain`"


def refuse_launch(command: str, reason: str = "it has no data-parallel path") -> None:
    """A one-line error when a command that has no DDP path was started by torchrun (every rank would run it)."""
    check(not launched(), f"{command} does not run under torchrun ({reason}; only {TORCHRUN_COMMANDS} do): "
          "start it once, without torchrun, and use --workers N / --ray-address for its parallel parts")


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    check(value is not None and value.strip().isdigit(),
          f"torchrun variable {name}={value!r} is missing or not a number; launch with torchrun --nproc_per_node N")
    return int(value)


def init(device: str = "auto", *, init_method: str = "env://", timeout_s: float = 600.0) -> torch.device:
    """Join the torchrun process group when launched by torchrun; return the device this rank uses.

    `device`: the configured device ("auto", "cpu", "cuda"); under torchrun a CUDA device becomes
    `cuda:LOCAL_RANK`. Idempotent: a second call returns the same device.
    """
    want = resolve_device(device)
    if not launched():
        return want
    rank, world, local = (_env_int(v) for v in ENV_VARS)
    cuda = want.type == "cuda"
    if cuda:
        check(torch.cuda.device_count() > local,
              f"rank {rank} wants GPU {local} but this node has {torch.cuda.device_count()}; "
              "lower --nproc_per_node to the GPU count (or use device: cpu)")
        torch.cuda.set_device(local)
        want = torch.device("cuda", local)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank,
                                    world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as e:
            raise CimnasError(f"rank {rank} cannot join the torchrun group ({str(e).splitlines()[0]}); check "
                              "MASTER_ADDR / MASTER_PORT or launch with torchrun --standalone") from None
    return want


def active() -> bool:
    """An initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_rank0() -> bool:
    """The rank that logs, writes the run folder and prints (True single-process)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (and return it); unchanged single-process."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(metrics: Mapping[str, float]) -> dict[str, float]:
    """The mean over ranks of each (float) metric; the same dict single-process."""
    if not active():
        return dict(metrics)
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    all_reduce_sum(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def broadcast_object(obj: object) -> object:
    """Rank 0's `obj` on every rank (a decision taken once, e.g. a resume epoch)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass(frozen=True)
class RankFailure:
    """What rank 0 sends instead of a decision when it stopped before taking it (`rank0_section`)."""

    message: str


@contextmanager
def rank0_section() -> Iterator[None]:
    """Rank 0's work before its next `share` (open the run folder, read the checkpoint, decide the resume).

    If it raises, the other ranks, which wait in that `share`, receive a `RankFailure` and raise the same
    one-line error (a CimnasError's text; another exception by its type and first line) instead of waiting
    forever; then the exception goes on up on rank 0. The section must hold no collective of its own (the
    marker is a broadcast the others are waiting for). Nothing happens on other ranks or single-process."""
    try:
        yield
    except Exception as e:
        if active() and is_rank0():
            text = str(e).splitlines()[0] if str(e) else ""
            msg = text if isinstance(e, CimnasError) else f"rank 0 stopped with {type(e).__name__}: {text}"
            try:
                broadcast_object(RankFailure(msg))
            except Exception:  # noqa: BLE001 - a rank that is gone already; rank 0's own error matters
                pass
        raise


def share(value: object = None) -> object:
    """Rank 0's `value` on every rank (a resume epoch, the models left to train); single-process: `value`.
    A rank other than 0 receiving rank 0's `RankFailure` raises it as a CimnasError."""
    if not active():
        return value
    got = broadcast_object(value if is_rank0() else None)
    if isinstance(got, RankFailure) and not is_rank0():
        raise CimnasError(got.message)
    return got


def average_gradients(params: Iterable[nn.Parameter], n: int) -> None:
    """Replace every gradient by the sample-weighted mean over ranks, sum_r n_r g_r / sum_r n_r (no-op
    single-process).

    `n`: this rank's share of the global batch; `g_r`: the gradient of the mean loss over that share, so the
    result is the gradient of the mean over the global batch (unequal shares included). One flat all-reduce
    carries every gradient and, as its last element, the share size. Parameters without a gradient are left
    out (every rank ran the same sub-nets, so the same ones have none)."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    device = grads[0].device
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [torch.ones(1, device=device)]) * float(n)
    all_reduce_sum(flat)
    flat /= flat[-1].clone()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def wrap(model: nn.Module, device: str | torch.device) -> nn.Module:
    """`model` in DistributedDataParallel under an active group (parameters broadcast from rank 0); the model
    itself otherwise, or when it is wrapped already."""
    if not active() or isinstance(model, DistributedDataParallel):
        return model
    device = torch.device(device)
    model.to(device)
    # buffers (BN running statistics) are rank 0's at every forward: DDP's default
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_wrapped(model: nn.Module) -> bool:
    return isinstance(model, DistributedDataParallel)


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so evaluations and checkpoints agree."""
    if not active():
        return
    for buf in unwrap(model).buffers():
        dist.broadcast(buf.data, src=0)


def shard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of a global batch (sizes differ by at most one sample)."""
    w, r = world_size(), rank()
    return torch.tensor_split(x, w)[r], torch.tensor_split(y, w)[r]


def execution() -> dict:
    """How this run executes, for `RunFolder.record_execution`."""
    if not active():
        return {"engine": "single-process", "world_size": 1}
    return {"engine": "torchrun", "world_size": world_size(), "backend": dist.get_backend()}


def shutdown() -> None:
    """Leave the process group (end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
