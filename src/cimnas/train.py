"""The one training driver and the one evaluator: plain PyTorch, visible here (nanoGPT-style).

Every model cimnas trains goes through `fit()` / `train_steps()`: `cimnas train`, HAWIS stage A (a sandwich-rule
`step`), the stage-B episode fine-tunes, stage C, the UAE children (noise-aware via `batch_context`) and the UAE
analysis model. What differs is a hook, not a copy of the loop:

- `step(x, y) -> loss`: replaces the default forward / backward / optimiser step (the super-net's sandwich rule);
- `batch_context(model)`: a context manager around each batch's forward and backward (UAE noise-aware training
  perturbs the weights on enter and restores them on exit, before `optimizer.step()`);
- `regularizer(model) -> scalar`: added to the loss (HAWIS Eq. 4);
- `on_epoch_end(epoch, record)`: called after each epoch (the pipelines checkpoint there).

No module-level state: the device, the split and the seed come from the caller. The batch order of epoch e is
drawn from `derive_seed(seed, "epoch", e)`, so a resumed run needs no generator state and a run under torchrun
(`cimnas.distributed`) gives every rank its share of the same permutation. Metrics accumulate on the device; the
host reads them once per epoch (no per-batch synchronisation).

HAWIS schedule (Sec. IV, authors' CIFAR trainer): SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1
multiplied by 0.1 at epochs {200, 260, 320} of 400; ImageNet lr 0.05 at {30, 50, 65}.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cimnas import distributed
from cimnas.config import OptimConfig
from cimnas.errors import CimnasError
from cimnas.nn.regularizers import two_side_regularizer
from cimnas.utils.seed import derive_seed, make_generator

Regularizer = Callable[[nn.Module], torch.Tensor]
BatchContext = Callable[[nn.Module], contextlib.AbstractContextManager]
Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | float]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------- factories
def make_optimizer(params: nn.Module | Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The one optimiser factory: SGD (momentum, optional Nesterov) or Adam over the trainable parameters;
    the optimiser's L2 weight decay applies when `cfg.regularizer == "l2"`."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = [p for p in params if p.requires_grad]
    wd = cfg.weight_decay if cfg.regularizer == "l2" else 0.0
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: multi-step (lr * gamma^(milestones passed)), cosine over `epochs`, or constant."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    milestones = list(cfg.milestones) if cfg.schedule == "multistep" else []
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)


def make_regularizer(cfg: OptimConfig) -> Regularizer | None:
    """HAWIS Eq. 4 two-side regularization `coef * sum((|w| - w0)^2)` when configured, else None."""
    if cfg.regularizer != "two_side" or cfg.reg_coef <= 0:
        return None
    return lambda model: two_side_regularizer(model, cfg.w0, cfg.reg_coef)


def scale_milestones(milestones: Sequence[int], from_epochs: int, to_epochs: int) -> list[int]:
    """Scale a paper schedule to a smaller budget, e.g. {200, 260, 320}/400 -> {5, 6, 8}/10."""
    out = sorted({max(1, round(m * to_epochs / from_epochs)) for m in milestones})
    return [m for m in out if m < to_epochs] if to_epochs > 1 else []


# ---------------------------------------------------------------------------- batches
def n_batches(n_samples: int, batch_size: int, epochs: float, cap: int | None = None) -> int:
    """Batches for a (possibly fractional) number of epochs, at least 1 when epochs > 0, at most `cap`."""
    if epochs <= 0:
        return 0
    per_epoch = max(1, math.ceil(n_samples / batch_size))
    n = max(1, math.ceil(epochs * per_epoch))
    return min(n, cap) if cap is not None else n


def cycle_batches(split: Any, batch_size: int, count: int, generator: torch.Generator,
                  augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`count` shuffled batches, re-shuffling (from `generator`) at each pass over the split."""
    done = 0
    while done < count:
        for batch in split.batches(batch_size, shuffle=True, generator=generator, augment=augment):
            yield batch
            done += 1
            if done >= count:
                return


def epoch_generator(seed: int, epoch: int, label: str = "epoch") -> torch.Generator:
    """The batch-order generator of one epoch: a function of (seed, label, epoch) only."""
    return make_generator(derive_seed(seed, label, epoch))


def _progress(iterable: Any, total: int | None, desc: str, enabled: bool) -> Any:
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


# ---------------------------------------------------------------------------- the GPU path
def autocast(device: str | torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for amp="bf16", else nothing (OptimConfig.amp)."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp != "bf16":
        raise CimnasError(f"amp must be off or bf16, got {amp!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def training_forward(model: nn.Module, cfg: OptimConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The forward the default step calls: `torch.compile(model)` for `cfg.compile` (it shares the model's
    parameters; the first batches pay the compile time), else None (= `model` itself)."""
    return torch.compile(model) if cfg.compile else None


def speed_options(model: nn.Module, cfg: OptimConfig, *, compiled: bool = True) -> dict:
    """The `train_steps` keyword arguments of `cfg`'s GPU path (the model itself is put in channels_last by
    `fit`, before any DDP wrapper is built)."""
    forward = training_forward(model, cfg) if compiled else None
    return {"forward": forward, "amp": cfg.amp, "channels_last": cfg.channels_last}


# ---------------------------------------------------------------------------- the loop
def train_steps(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer | None, *,
                device: str | torch.device, step: Step | None = None, regularizer: Regularizer | None = None,
                batch_context: BatchContext | None = None, total: int | None = None, progress: bool = False,
                desc: str = "train", forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                amp: str = "off", channels_last: bool = False) -> dict:
    """Train on `batches`; returns {"loss", "reg", "train_acc", "samples"} (means over samples).

    GPU path (`OptimConfig.compile / amp / channels_last`, set up by `fit`): `forward` replaces `model(x)` in
    the default step (a `torch.compile`d model); `amp="bf16"` runs that forward under bf16 autocast while the
    loss and the regulariser are computed in fp32 (BN statistics and binarization stay fp32 inside the layers);
    `channels_last` hands 4-D batches to the model in NHWC. Metrics accumulate on the device and are read once,
    at the end: no host synchronisation per batch.

    Default step: loss = cross_entropy(model(x), y) + regularizer(model); backward inside `batch_context`; then
    `optimizer.step()` outside it, so an update computed at perturbed weights applies to the clean ones.
    A custom `step(x, y)` does all of that itself and returns its loss (accuracy is then not tracked).

    A DistributedDataParallel `model` (`cimnas.distributed.wrap`) trains on this rank's share of every global
    batch (a batch with fewer samples than ranks is skipped by every rank alike); the loss is scaled by
    n_rank * world / n_global so DDP's gradient average is the gradient of the global-batch mean; the returned
    metrics are summed over ranks. `batch_context` and `regularizer` receive the module inside the wrapper.
    """
    ddp = distributed.is_wrapped(model)
    world = distributed.world_size() if ddp else 1
    module = distributed.unwrap(model)
    model.train()
    device = torch.device(device)
    loss_sum = torch.zeros((), device=device)
    reg_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    fwd = forward if forward is not None else model
    for x, y in _progress(batches, total, desc, progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        n_global = y.shape[0]
        if ddp:
            if n_global < world:
                continue
            x, y = distributed.shard(x, y)
        n = y.shape[0]
        if step is not None:
            loss_sum += torch.as_tensor(step(x, y), device=device).detach() * n
            seen += n
            continue
        optimizer.zero_grad(set_to_none=True)
        ctx = batch_context(module) if batch_context is not None else contextlib.nullcontext()
        with ctx:
            with autocast(device, amp):
                logits = fwd(x)
            loss = F.cross_entropy(logits.float(), y)
            objective = loss * (n * world / n_global) if ddp else loss
            reg = regularizer(module) if regularizer is not None else None
            (objective + reg if reg is not None else objective).backward()
        optimizer.step()
        loss_sum += loss.detach() * n
        if reg is not None:
            reg_sum += reg.detach() * n
        correct += (logits.detach().argmax(1) == y).sum()
        seen += n
    if ddp:  # one all-reduce per epoch: the sums over every rank's share
        sums = distributed.all_reduce_sum(torch.stack([loss_sum.double(), reg_sum.double(), correct.double(),
                                                       torch.tensor(float(seen), device=device).double()]))
        loss_sum, reg_sum, correct, seen = sums[0], sums[1], sums[2], int(sums[3])
    if seen == 0:
        return {"loss": float("nan"), "reg": 0.0, "train_acc": float("nan"), "samples": 0}
    acc = float(correct) / seen if step is None else float("nan")
    return {"loss": float(loss_sum) / seen, "reg": float(reg_sum) / seen, "train_acc": acc, "samples": seen}


def train_epoch(model: nn.Module, split: Any, optimizer: torch.optim.Optimizer | None, *, batch_size: int,
                generator: torch.Generator, device: str | torch.device, max_batches: int | None = None,
                augment: bool = True, **kw: Any) -> dict:
    """One pass over `split` (at most `max_batches` batches) in an order drawn from `generator`."""
    total = split.num_batches(batch_size)
    if max_batches is not None:
        total = min(total, max_batches)
    batches = cycle_batches(split, batch_size, total, generator, augment)
    return train_steps(model, batches, optimizer, device=device, total=total, **kw)


def fit(model: nn.Module, split: Any, cfg: OptimConfig, *, device: str | torch.device, seed: int,
        optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, start_epoch: int = 0,
        step: Step | None = None, regularizer: Regularizer | None = None, batch_context: BatchContext | None = None,
        eval_split: Any = None, on_epoch_end: Callable[[int, dict], None] | None = None, label: str = "epoch",
        desc: str = "train") -> list[dict]:
    """Train `model` on `split` for epochs `start_epoch .. cfg.epochs - 1`; returns one record per epoch.

    The optimiser, schedule and regulariser come from `cfg` unless given. Each record holds epoch, loss, reg,
    train_acc, lr and, with `eval_split`, `eval_acc`. A non-finite loss stops the run with a one-line error
    before `on_epoch_end` (so the last checkpoint written there is the last good one). `cfg.compile`, `cfg.amp`
    and `cfg.channels_last` select the GPU path of the default step (`train_steps`).

    Under torchrun (`cimnas.distributed.init()` joined a group of several processes) the model is wrapped in
    DistributedDataParallel (or given wrapped), every rank follows the same sequence of global batches of
    `cfg.batch_size` and takes its share, metrics are all-reduced, BatchNorm buffers are rank 0's after each
    epoch and `on_epoch_end` runs on rank 0 only (logging, checkpoints). A custom `step` must use a model
    wrapped by the caller (`fit(distributed.wrap(model, device), ..., step=...)`), so its backward syncs.
    """
    if step is not None and distributed.active() and not distributed.is_wrapped(model):
        raise CimnasError(f"{desc}: under torchrun a custom training step needs the model wrapped by "
                          "cimnas.distributed.wrap (and the step using that wrapper)")
    if cfg.channels_last:  # before DDP builds its gradient buckets, which follow the parameters' layout
        distributed.unwrap(model).to(memory_format=torch.channels_last)
    net = distributed.wrap(model, device) if step is None else model
    model = distributed.unwrap(net)
    optimizer = optimizer if optimizer is not None or step is not None else make_optimizer(model, cfg)
    if scheduler is None and optimizer is not None:
        scheduler = make_scheduler(optimizer, cfg)
    if regularizer is None:
        regularizer = make_regularizer(cfg)
    speed = speed_options(net, cfg, compiled=step is None)  # a custom step calls its own model
    records = []
    for epoch in range(start_epoch, cfg.epochs):
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else float("nan")
        stats = train_epoch(net, split, optimizer, batch_size=cfg.batch_size, device=device,
                            generator=epoch_generator(seed, epoch, label), max_batches=cfg.max_batches,
                            augment=cfg.augment, step=step, regularizer=regularizer, batch_context=batch_context,
                            **speed,
                            progress=cfg.progress and distributed.is_rank0(), desc=f"{desc} {epoch + 1}/{cfg.epochs}")
        distributed.broadcast_buffers(net)
        if not math.isfinite(stats["loss"]) and stats["samples"] > 0:
            raise CimnasError(f"{desc}: the training loss became {stats['loss']} in epoch {epoch + 1} (lr {lr:g} "
                              "too high?); the last good checkpoint is kept: lower the learning rate and resume")
        if scheduler is not None:
            scheduler.step()
        record = {"epoch": epoch + 1, **{k: stats[k] for k in ("loss", "reg", "train_acc")}, "lr": lr}
        if eval_split is not None:
            record["eval_acc"] = evaluate(model, eval_split, batch_size=cfg.eval_batch_size, device=device)
        records.append(record)
        if on_epoch_end is not None and distributed.is_rank0():
            on_epoch_end(epoch + 1, record)
    return records


# ---------------------------------------------------------------------------- the evaluator
@torch.no_grad()
def predict(model: nn.Module, data: Any, *, batch_size: int = 512, device: str | torch.device = "cpu",
            max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) over a split (in order) or an iterable of (x, y) batches, eval mode."""
    was_training = model.training
    model.eval()
    batches = data.batches(batch_size, shuffle=False, augment=False) if hasattr(data, "batches") else data
    preds, labels = [], []
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            preds.append(model(x.to(device)).argmax(1))
            labels.append(y.to(preds[-1].device))
    finally:
        model.train(was_training)
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(labels)


def evaluate(model: nn.Module, data: Any, *, batch_size: int = 512, device: str | torch.device = "cpu",
             max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] (eval mode, no augmentation) on a split or a list of (x, y) batches."""
    pred, y = predict(model, data, batch_size=batch_size, device=device, max_batches=max_batches)
    return float((pred == y).float().mean()) if y.numel() else float("nan")
