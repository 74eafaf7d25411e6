"""Stage A: slimmable pretraining of the super-net (HAWIS III-A, Eq. 1) through `cimnas.train.fit`.

The sandwich rule is fit's `step` hook: each batch trains the largest, the smallest and `n_random` random
non-uniform sub-nets (summed losses, one optimiser step, Eq. 4 regularization). The sub-net draws of epoch e come
from `derive_seed(seed, "sandwich", e)` (`SandwichDraws`) and the batch order from fit's per-epoch seed, so a
run resumed from `checkpoints/supernet_pretrain.pt` (saved after every epoch with its optimiser and schedule)
repeats exactly what an uninterrupted run does. `checkpoints/supernet.pt` marks stage A done
(`pretrain.from_run` copies another run's). Under torchrun (`torchrun --nproc_per_node N -m cimnas hawis
pretrain ...`) the ranks train data-parallel (`stage_pretrain`); rank 0 decides where to start and writes every
file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from cimnas import distributed
from cimnas.config import to_dict
from cimnas.errors import check
from cimnas.nn.models import model_payload
from cimnas.nn.supernet import SuperNet
from cimnas.pipelines.hawis.context import Context
from cimnas.runs import load_payload, load_state
from cimnas.train import cycle_batches, evaluate, fit, make_optimizer, make_regularizer, make_scheduler
from cimnas.utils.seed import derive_seed, make_generator, seed_everything
from cimnas.utils.units import pct

DONE = "supernet.pt"
PARTIAL = "supernet_pretrain.pt"
STATE_FIELDS = {"state_dict": dict, "epoch": int}
PARTIAL_FIELDS = {**STATE_FIELDS, "optimizer": dict, "scheduler": dict}


def build_supernet(ctx: Context) -> SuperNet:
    """The binarized model at the space's max widths (seeded init), wrapped as a SuperNet."""
    seed_everything(derive_seed(ctx.seed, "supernet-init"))
    return SuperNet(ctx.build(list(ctx.space.max_widths().widths)), ctx.space)


def payload(ctx: Context, net: SuperNet, epoch: int, **extra: object) -> dict:
    """The common checkpoint payload (RunFolder.save adds the format)."""
    return model_payload(net, dataset=ctx.splits.info(), config=to_dict(ctx.cfg), epoch=epoch, **extra)


def load_supernet(ctx: Context, net: SuperNet, path: Path) -> None:
    """Load a finished stage-A checkpoint into `net` (format, field types and shapes checked)."""
    ck = load_payload(path, STATE_FIELDS, map_location=ctx.device)
    load_state(net, ck["state_dict"], path)


class SandwichDraws:
    """The sandwich rule's sub-net generator: seeded with derive_seed(seed, "sandwich", e) in epoch e, where e
    is read off the schedule (fit steps it once per epoch, a resume restores it). So every rank under torchrun
    draws the same sub-nets (fit's `on_epoch_end`, rank 0's, is not needed) and a resumed run the same ones."""

    def __init__(self, seed: int, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.seed, self.scheduler = seed, scheduler
        self.epoch: int | None = None
        self.gen = torch.Generator()

    def generator(self) -> torch.Generator:
        epoch = int(self.scheduler.last_epoch)
        if epoch != self.epoch:
            self.gen, self.epoch = make_generator(derive_seed(self.seed, "sandwich", epoch)), epoch
        return self.gen


def _starting_point(ctx: Context, net: SuperNet, opt: torch.optim.Optimizer, sched: object) -> tuple[str, int]:
    """Rank 0: where stage A starts -> ("done" | "copied" | "train", first epoch), loading the state into
    `net` (and, to resume training, `opt` and `sched`)."""
    cfg, run = ctx.cfg.pretrain, ctx.run
    if run.has(f"checkpoints/{DONE}"):
        load_supernet(ctx, net, run.ckpt / DONE)
        run.log(f"stage A: loaded the pretrained super-net from {run.ckpt / DONE}")
        return "done", cfg.epochs
    if cfg.from_run is not None:
        src = Path(cfg.from_run) / "checkpoints" / DONE
        check(src.is_file(), f"pretrain.from_run: {src} not found; finish stage A there first "
              f"(cimnas hawis pretrain --out {cfg.from_run})")
        load_supernet(ctx, net, src)
        run.save(DONE, payload(ctx, net, cfg.epochs, source=str(src)))
        run.log(f"stage A: super-net taken from {src}")
        return "copied", cfg.epochs
    if not run.has(f"checkpoints/{PARTIAL}"):
        return "train", 0
    ck = run.load(PARTIAL, PARTIAL_FIELDS, map_location=ctx.device)
    _load_partial(net, opt, sched, ck, run.ckpt / PARTIAL)
    run.check_extends("pretrain.epochs", cfg.epochs, ck["epoch"])
    run.log(f"stage A: resuming after epoch {ck['epoch']}")
    return "train", ck["epoch"]


def _load_partial(net: SuperNet, opt: torch.optim.Optimizer, sched: object, ck: dict, path: Path) -> None:
    for target, key in ((net, "state_dict"), (opt, "optimizer"), (sched, "scheduler")):
        load_state(target, ck[key], path)


def _follow_rank0(ctx: Context, net: SuperNet, opt: torch.optim.Optimizer, sched: object, how: str,
                  start: int) -> None:
    """A rank other than 0: load what rank 0 loaded (its files are complete: rank 0 writes the next one only
    after an epoch that needs every rank)."""
    if how == "done":
        load_supernet(ctx, net, ctx.run.ckpt / DONE)
    elif how == "copied":
        load_supernet(ctx, net, Path(ctx.cfg.pretrain.from_run) / "checkpoints" / DONE)
    elif start > 0:
        path = ctx.run.ckpt / PARTIAL
        _load_partial(net, opt, sched, load_payload(path, PARTIAL_FIELDS, map_location=ctx.device), path)


def stage_pretrain(ctx: Context) -> SuperNet:
    """Stage A: slimmable pretraining with the sandwich rule and two-side regularization.

    Under torchrun every rank trains on its share of each global batch. The sandwich step cannot use DDP's
    gradient hooks as they are: it runs several forward / backward passes (one per sub-net) before one
    optimizer step, and a narrow sub-net leaves gradient slices at zero. So the step accumulates its sub-nets'
    gradients locally and then averages them over ranks in ONE explicit all-reduce weighted by share size
    (`distributed.average_gradients`: the gradient of the global-batch loss, as fit's DDP path computes it
    with the loss scaled by n_rank * world / n_global); only then is the Eq. 4 regularizer's gradient added,
    once, on every rank alike (it depends on the weights only, so it must not be summed over ranks). The
    DDP wrapper given to fit broadcasts rank 0's weights at the start and tells fit to shard the batches;
    its own forward is not used. BatchNorm follows fit: per-rank batch statistics, rank 0's running ones.
    """
    cfg, run = ctx.cfg.pretrain, ctx.run
    net = build_supernet(ctx)
    opt = make_optimizer(net, cfg)
    sched = make_scheduler(opt, cfg)
    with distributed.rank0_section():
        plan = _starting_point(ctx, net, opt, sched) if distributed.is_rank0() else None
    how, start = distributed.share(plan)
    if not distributed.is_rank0():
        _follow_rank0(ctx, net, opt, sched, how, start)
    if how != "train":
        return net
    reg = make_regularizer(cfg)
    draws = SandwichDraws(ctx.seed, sched)
    model = distributed.wrap(net, ctx.device)  # the super-net itself single-process

    def average(n: int) -> Callable[[], None] | None:
        return (lambda: distributed.average_gradients(net.parameters(), n)) if distributed.is_wrapped(model) else None

    def sandwich_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | float:
        return net.slimmable_step(x, y, net.sandwich_widths(draws.generator(), cfg.n_random), opt, reg,
                                  distill=distilling(), reduce_grads=average(y.shape[0]))

    def distilling() -> bool:  # in-place distillation after `distill_warmup` label-only epochs (epoch off the schedule)
        return cfg.inplace_distill and int(sched.last_epoch) >= cfg.distill_warmup

    t0 = [time.perf_counter()]

    def on_epoch_end(epoch: int, record: dict) -> None:
        run.save(PARTIAL, payload(ctx, net, epoch, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                                  metrics=record))
        run.scalars("pretrain", record, epoch)  # TensorBoard, when the config asks for it
        run.log(f"stage A epoch {epoch}/{cfg.epochs}: loss {record['loss']:.4f} lr {record['lr']:.4g} "
                f"({time.perf_counter() - t0[0]:.1f} s)")
        t0[0] = time.perf_counter()

    fit(model, ctx.splits.search_train, cfg, device=ctx.device, seed=ctx.seed, optimizer=opt, scheduler=sched,
        start_epoch=start, step=sandwich_step, on_epoch_end=on_epoch_end, label="pretrain", desc="stage A epoch")
    if not distributed.is_rank0():
        return net  # rank 0 measures and writes the finished super-net
    metrics = {}
    for name, w in (("largest", net.largest()), ("smallest", net.smallest())):
        net.recalibrate_bn(w, cycle_batches(ctx.splits.search_train, cfg.batch_size, 8, make_generator(0)), 8,
                           ctx.device)
        metrics[f"{name}_val_accuracy"] = evaluate(net, ctx.splits.search_eval, batch_size=cfg.eval_batch_size,
                                                   device=ctx.device)
        run.log(f"stage A: {name} sub-net accuracy on search_eval {pct(metrics[f'{name}_val_accuracy'])}")
        net.train()
    net.set_widths(net.largest())
    run.save(DONE, payload(ctx, net, cfg.epochs, metrics=metrics))
    return net
