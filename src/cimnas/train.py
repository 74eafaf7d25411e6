"""Plain PyTorch training loops: SGD with momentum, multi-step LR, optional regularizer.

No framework and no module-level state: the device, the data split and the torch.Generator come
from the caller, so the same functions run in a notebook, in the HAWIS/UAE pipelines, or in one
process per GPU under torchrun (wrap the model in DistributedDataParallel and give each rank its
own split / generator).

HAWIS schedule (Sec. IV, authors' CIFAR trainer): SGD momentum 0.9, weight decay 1e-4, batch 128,
lr 0.1 multiplied by 0.1 at epochs {200, 260, 320} of 400; ImageNet lr 0.05 at {30, 50, 65}.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

Regularizer = Callable[[nn.Module], torch.Tensor]
BatchContext = Callable[[nn.Module], contextlib.AbstractContextManager]


def make_optimizer(model: nn.Module, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                   nesterov: bool = False) -> torch.optim.SGD:
    """SGD with momentum over all trainable parameters; `weight_decay` is the L2 coefficient."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def make_scheduler(optimizer: torch.optim.Optimizer, milestones: Sequence[int],
                   gamma: float = 0.1) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multi-step LR: lr * gamma^(number of milestones <= epoch); step once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def scale_milestones(milestones: Sequence[int], from_epochs: int, to_epochs: int) -> list[int]:
    """Scale a paper schedule to a smaller budget, e.g. {200, 260, 320}/400 -> {5, 6, 8}/10."""
    out = sorted({max(1, round(m * to_epochs / from_epochs)) for m in milestones})
    return [m for m in out if m < to_epochs] if to_epochs > 1 else []


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


def train_epoch(model: nn.Module, split: Any, optimizer: torch.optim.Optimizer, *, batch_size: int,
                generator: torch.Generator | None, device: str | torch.device,
                regularizer: Regularizer | None = None, batch_context: BatchContext | None = None,
                augment: bool = True, progress: bool = True, desc: str = "train") -> dict:
    """One pass over `split` in an order drawn from `generator`; returns mean loss, accuracy, samples.

    loss = cross_entropy + regularizer(model) (e.g. HAWIS Eq. 4 two-side regularization).
    `batch_context(model)` wraps each batch's forward and backward (UAE noise-aware training
    perturbs the weights on enter and restores them on exit), so `optimizer.step()` updates the
    clean weights with gradients computed at the perturbed ones. `augment` applies the split's
    own augmentation (none if the split has none).
    """
    model.train()
    device = torch.device(device)
    total_loss = total_reg = 0.0
    correct = seen = 0
    batches = split.batches(batch_size, shuffle=True, generator=generator, augment=augment)
    for x, y in _progress(batches, split.num_batches(batch_size), desc, progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        ctx = batch_context(model) if batch_context is not None else contextlib.nullcontext()
        with ctx:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            reg = regularizer(model) if regularizer is not None else None
            full = loss + reg if reg is not None else loss
            full.backward()
        optimizer.step()
        n = y.numel()
        total_loss += float(loss.detach()) * n
        total_reg += float(reg.detach()) * n if reg is not None else 0.0
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += n
    if seen == 0:
        return {"loss": float("nan"), "reg": 0.0, "train_acc": float("nan"), "samples": 0}
    return {"loss": total_loss / seen, "reg": total_reg / seen, "train_acc": correct / seen, "samples": seen}


@torch.no_grad()
def predict(model: nn.Module, split: Any, *, batch_size: int = 512,
            device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) over `split` in order, in eval mode."""
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for x, y in split.batches(batch_size, shuffle=False, augment=False):
            preds.append(model(x.to(device)).argmax(1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(labels)


def evaluate(model: nn.Module, split: Any, *, batch_size: int = 512, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy in [0, 1] of `model` (eval mode, no augmentation) on `split`."""
    pred, y = predict(model, split, batch_size=batch_size, device=device)
    return float((pred == y).float().mean()) if y.numel() else float("nan")


def l2_regularizer(coef: float) -> Regularizer:
    """coef * sum(w^2) over conv/FC weights (explicit-loss form of weight decay, for comparisons)."""
    from cimnas.nn.layers import quant_layers

    def reg(model: nn.Module) -> torch.Tensor:
        return coef * sum((m.weight ** 2).sum() for _, m in quant_layers(model))

    return reg
