"""Stage A: slimmable pretraining of the super-net (HAWIS III-A, Eq. 1) through `cimnas.train.fit`.

The sandwich rule is fit's `step` hook: each batch trains the largest, the smallest and `n_random` random
non-uniform sub-nets (summed losses, one optimiser step, Eq. 4 regularization). The sub-net draws of epoch e come
from `derive_seed(seed, "sandwich", e)` and the batch order from fit's per-epoch seed, so a run resumed from
`checkpoints/supernet_pretrain.pt` (saved after every epoch with its optimiser and schedule) repeats exactly what an
uninterrupted run does. `checkpoints/supernet.pt` marks stage A done (`pretrain.from_run` copies another run's).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cimnas.config import to_dict
from cimnas.errors import check
from cimnas.nn.models import model_payload
from cimnas.nn.supernet import SuperNet
from cimnas.pipelines.hawis.context import Context
from cimnas.runs import load_payload, load_state
from cimnas.train import cycle_batches, evaluate, fit, make_optimizer, make_regularizer, make_scheduler
from cimnas.utils.seed import derive_seed, make_generator, seed_everything

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


def stage_pretrain(ctx: Context) -> SuperNet:
    """Stage A: slimmable pretraining with the sandwich rule and two-side regularization."""
    cfg, run = ctx.cfg.pretrain, ctx.run
    net = build_supernet(ctx)
    if run.has(f"checkpoints/{DONE}"):
        load_supernet(ctx, net, run.ckpt / DONE)
        run.log(f"stage A: loaded the pretrained super-net from {run.ckpt / DONE}")
        return net
    if cfg.from_run is not None:
        src = Path(cfg.from_run) / "checkpoints" / DONE
        check(src.is_file(), f"pretrain.from_run: {src} not found; finish stage A there first "
              f"(cimnas hawis pretrain --out {cfg.from_run})")
        load_supernet(ctx, net, src)
        run.save(DONE, payload(ctx, net, cfg.epochs, source=str(src)))
        run.log(f"stage A: super-net taken from {src}")
        return net
    opt = make_optimizer(net, cfg)
    sched = make_scheduler(opt, cfg)
    start = 0
    if run.has(f"checkpoints/{PARTIAL}"):
        ck = run.load(PARTIAL, PARTIAL_FIELDS, map_location=ctx.device)
        load_state(net, ck["state_dict"], run.ckpt / PARTIAL)
        load_state(opt, ck["optimizer"], run.ckpt / PARTIAL)
        load_state(sched, ck["scheduler"], run.ckpt / PARTIAL)
        start = ck["epoch"]
        run.check_extends("pretrain.epochs", cfg.epochs, start)
        run.log(f"stage A: resuming after epoch {start}")
    reg = make_regularizer(cfg)
    gen = make_generator(derive_seed(ctx.seed, "sandwich", start))

    def sandwich_step(x: torch.Tensor, y: torch.Tensor) -> float:
        return net.slimmable_step(x, y, net.sandwich_widths(gen, cfg.n_random), opt, reg,
                                  distill=cfg.inplace_distill)

    t0 = [time.perf_counter()]

    def on_epoch_end(epoch: int, record: dict) -> None:
        run.save(PARTIAL, payload(ctx, net, epoch, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                                  metrics=record))
        run.log(f"stage A epoch {epoch}/{cfg.epochs}: loss {record['loss']:.4f} lr {record['lr']:.4g} "
                f"({time.perf_counter() - t0[0]:.1f} s)")
        gen.manual_seed(derive_seed(ctx.seed, "sandwich", epoch))  # the draws of the next epoch
        t0[0] = time.perf_counter()

    fit(net, ctx.splits.search_train, cfg, device=ctx.device, seed=ctx.seed, optimizer=opt, scheduler=sched,
        start_epoch=start, step=sandwich_step, on_epoch_end=on_epoch_end, label="pretrain", desc="stage A epoch")
    metrics = {}
    for name, w in (("largest", net.largest()), ("smallest", net.smallest())):
        net.recalibrate_bn(w, cycle_batches(ctx.splits.search_train, cfg.batch_size, 8, make_generator(0)), 8,
                           ctx.device)
        metrics[f"{name}_val_accuracy"] = evaluate(net, ctx.splits.search_eval, batch_size=cfg.eval_batch_size,
                                                   device=ctx.device)
        run.log(f"stage A: {name} sub-net accuracy on search_eval {metrics[f'{name}_val_accuracy']:.4f}")
        net.train()
    net.set_widths(net.largest())
    run.save(DONE, payload(ctx, net, cfg.epochs, metrics=metrics))
    return net
