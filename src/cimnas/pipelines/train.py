"""`cimnas train`: one model on one dataset, in a resumable run folder (cimnas.runs) through cimnas.train.fit.

Run folder (kind "train", docs/architecture.md)::

    run.json, config.yaml, run.log   the run description, the resolved config, the log
    metrics.jsonl                    one line per finished epoch: epoch, loss, reg, train_acc, val_acc, lr, time_s
    checkpoints/checkpoint.pt        after every epoch (atomic): model, optimizer, scheduler, epoch, metrics
    final.json                       test accuracy (read once, at the end), val accuracy, BiOps / FLOPs / params

Splits: the model trains on `search_train`; `val_acc` is measured on the held-out `search_eval` part (what a
model selection may look at); the test split is read once, for final.json.

Resume: the config must equal the stored one except `train.epochs` (which may only grow: a resume extends a
run, never rewrites its history), `train.progress` and `train.eval_batch_size`. The batch order of epoch e is a
function of (seed, e) (cimnas.train.fit), so a resumed run repeats what an uninterrupted one does (CPU).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cimnas import distributed
from cimnas.config import DataConfig, ModelConfig, OptimConfig, check_device, to_dict
from cimnas.data import DATASETS, load_from_config
from cimnas.errors import CimnasError, check
from cimnas.hardware.crossbar import HardwareConfig
from cimnas.hardware.energy import estimate_model
from cimnas.limits import check_model
from cimnas.nn.counting import count_ops, trace_layers
from cimnas.nn.models import MODELS, build_model, model_payload
from cimnas.nn.refactor import RefactorOptions
from cimnas.nn.zoo import external_model, is_external
from cimnas.pipelines.uae.config import NoiseConfig
from cimnas.pipelines.uae.noise import noise_batch_context
from cimnas.runs import RunFolder, load_payload, load_state
from cimnas.train import evaluate, fit, make_optimizer, make_scheduler
from cimnas.utils.seed import derive_seed, make_generator
from cimnas.utils.units import pct

KIND = "train"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESUMABLE = ("train.epochs", "train.progress", "train.eval_batch_size", "tensorboard")
CKPT_FIELDS = {"state_dict": dict, "epoch": int, "optimizer": dict, "scheduler": dict, "config": dict}


@dataclass
class TrainRunConfig:
    """Root config of `cimnas train` (configs/train/*.yaml, configs/ablation/*.yaml)."""

    seed: int = 0  # weight init and batch order (and the data split unless data.seed is set)
    device: str = "auto"  # auto = cuda if present, else cpu
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)  # crossbar spec of final.json's energy
    # noise-aware training (UAE Sec. 4.2): a fresh N(0, sigma) sample on every quantized weight per batch;
    # sigma 0 (the default) trains plainly
    noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(gaussian_sigma=0.0))
    tensorboard: bool = False  # mirror metrics.jsonl's epochs to RUN/tensorboard (the tensorboard extra)

    def validate(self) -> None:
        DATASETS.get(self.data.name)  # unknown names -> one-line errors listing the valid ones
        if not is_external(self.model.name):
            MODELS.get(self.model.name)
        check(self.train.epochs >= 1, f"train.epochs must be >= 1 for cimnas train, got {self.train.epochs}")
        check(self.train.epochs <= 100_000, f"train.epochs={self.train.epochs} is not a training budget; "
              "give at most 100000")
        check_device(self.device)


# ---------------------------------------------------------------- building blocks
def load_splits(cfg: DataConfig, run_seed: int, device: torch.device) -> Any:
    """The dataset of `cfg` (`cimnas.data.load_from_config`: seeded by data.seed, else the run's seed)."""
    return load_from_config(cfg, run_seed, device)


def build_from_config(cfg: ModelConfig, splits: Any, seed: int) -> nn.Module:
    """build_model(...) for the dataset's shape (weights seeded by `seed`); refactor options for binary. An outside
    model (cimnas.nn.zoo) is built by its factory, given `cfg.weights`, and converted: `cfg.rules` per layer, the
    others at `precision` (kbit at `bits`)."""
    if is_external(cfg.name):
        default = f"kbit:{cfg.bits}" if cfg.precision == "kbit" else cfg.precision
        refactor = {"topology_mod": cfg.topology_mod, "thermometer": cfg.thermometer,
                    "thermometer_levels": cfg.thermometer_levels} if cfg.refactor else None
        return external_model(cfg.name, in_channels=splits.in_channels, num_classes=splits.num_classes,
                              image_size=splits.image_size, rules=cfg.rules, default=default, weights=cfg.weights,
                              seed=seed, refactor=refactor)
    refactor = None
    if cfg.precision == "binary":
        refactor = RefactorOptions(topology_mod=cfg.topology_mod, thermometer=cfg.thermometer,
                                   thermometer_levels=cfg.thermometer_levels)
    return build_model(cfg.name, in_channels=splits.in_channels, num_classes=splits.num_classes,
                       image_size=splits.image_size, widths=cfg.widths, width_mult=cfg.width_mult,
                       precision=cfg.precision, bits=cfg.bits, refactor=refactor, seed=seed, **cfg.options)


def ops_summary(model: nn.Module, splits: Any) -> dict:
    """Totals and per-layer BiOps / FLOPs / params (HAWIS Tables III/IV columns)."""
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    return count_ops(trace_layers(model, shape))


# ---------------------------------------------------------------- resume
def _restore(run: RunFolder, cfg: TrainRunConfig, model: nn.Module, optimizer: Any, scheduler: Any) -> int:
    """Load the run's checkpoint into model / optimizer / scheduler; returns the epochs already done."""
    path = run.ckpt / CHECKPOINT
    if not path.is_file():
        # stopped between epoch 1's metrics line and its checkpoint: start again from epoch 0 (same config);
        # more history than that without a checkpoint is a damaged run, which a restart would overwrite
        later = [r for r in run.records(METRICS) if _epoch(r) > 1]
        check(not later and not run.has("final.json"), f"{run.root} has results but no {path.name}; it cannot be "
              "resumed: restore the checkpoint or use a new --out folder")
        return 0
    ck = run.load(CHECKPOINT, fields=CKPT_FIELDS)
    done = ck["epoch"]
    check(done >= 0, f"checkpoint {path}: epoch {done} is negative; delete it or use a new --out folder")
    run.check_extends("train.epochs", cfg.train.epochs, done)
    stored = ck["config"].get("train", {}).get("epochs") if isinstance(ck["config"].get("train"), dict) else None
    if cfg.train.schedule == "cosine" and stored != cfg.train.epochs:
        raise CimnasError(f"cannot resume {run.root} with train.epochs={cfg.train.epochs}: the cosine schedule "
                          f"was laid out for {stored} epochs; keep train.epochs={stored} or use a new --out folder")
    load_state(model, ck["state_dict"], path)
    load_state(optimizer, ck["optimizer"], path)
    load_state(scheduler, ck["scheduler"], path)
    return done


# ---------------------------------------------------------------- the run
def run_training(cfg: TrainRunConfig, out_dir: str | Path, resume: bool = False,
                 on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train `cfg.model` on `cfg.data` into run folder `out_dir`; returns the final.json dict.

    Everything a user can get wrong (config, dataset, model) is checked before the folder is created;
    resume=False refuses a folder that holds a run, resume=True continues it from its checkpoint.
    `on_epoch_end(epoch, record)` is called after each epoch's checkpoint is written.

    Under torchrun (`torchrun --nproc_per_node N -m cimnas train ...`) fit() trains with DDP on the same global
    batches; rank 0 alone holds the run folder (lock, log, checkpoints, final.json) and tells the other ranks
    the resume epoch; they load the same checkpoint and return {} after training. If rank 0 stops before
    that (a refused resume), the other ranks raise its one-line error instead of waiting for the epoch.
    """
    device = distributed.init(cfg.device)
    splits = load_splits(cfg.data, cfg.seed, device)
    if not is_external(cfg.model.name):  # an outside factory runs once, for real (it is the user's code)
        check_model(lambda: build_from_config(cfg.model, splits, cfg.seed),
                    (splits.in_channels, splits.image_size, splits.image_size), cfg.train.batch_size,
                    f"model {cfg.model.name}")  # estimated on the meta device, before anything is allocated
    model = build_from_config(cfg.model, splits, cfg.seed).to(device)
    optimizer = make_optimizer(model, cfg.train)
    scheduler = make_scheduler(optimizer, cfg.train)
    cfg_dict = to_dict(cfg)
    if not distributed.is_rank0():
        return _follow_rank0(cfg, out_dir, splits, model, optimizer, scheduler, device)

    with contextlib.ExitStack() as stack:
        with distributed.rank0_section():  # a refused resume reaches the other ranks as the same error
            run = stack.enter_context(RunFolder.open(out_dir, KIND, cfg, resume=resume, resumable=RESUMABLE,
                                                     config_cls=TrainRunConfig))
            start = _restore(run, cfg, model, optimizer, scheduler) if run.resumed else 0
        distributed.share(start)
        if run.resumed:
            run.write_config(cfg_dict)  # a resume may have extended train.epochs
            run.rewrite_records(METRICS, [r for r in run.records(METRICS) if _epoch(r) <= start])
            run.log(f"resumed at epoch {start}/{cfg.train.epochs}")
        run.record_execution(command="train", device=str(device), start_epoch=start, **distributed.execution())
        clock = [time.perf_counter()]

        def epoch_done(epoch: int, rec: dict) -> None:
            record = {"epoch": epoch, "loss": rec["loss"], "reg": rec["reg"], "train_acc": rec["train_acc"],
                      "val_acc": rec["eval_acc"], "lr": rec["lr"],
                      "time_s": round(time.perf_counter() - clock[0], 3)}
            # metrics first: a crash before the checkpoint leaves a line that resume drops again
            run.append(METRICS, record)
            run.save(CHECKPOINT, model_payload(model, dataset=splits.info(), config=cfg_dict, epoch=epoch,
                                               optimizer=optimizer, scheduler=scheduler, metrics=record))
            line = (f"epoch {epoch}/{cfg.train.epochs}: loss {record['loss']:.4f}, train {pct(record['train_acc'])},"
                    f" val {pct(record['val_acc'])}, lr {record['lr']:g}")
            run.log(line, echo=False)
            if cfg.train.progress and sys.stderr.isatty():  # a terminal sees every epoch (stdout stays the result)
                tqdm.write(line, file=sys.stderr)
            clock[0] = time.perf_counter()
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)

        fit(model, splits.search_train, cfg.train, device=device, seed=cfg.seed, optimizer=optimizer,
            scheduler=scheduler, start_epoch=start, eval_split=splits.search_eval, on_epoch_end=epoch_done,
            batch_context=_noise_context(cfg, start, device), desc="epoch")
        bs = cfg.train.eval_batch_size
        ops = ops_summary(model, splits)
        final = {"test_acc": evaluate(model, splits.test, batch_size=bs, device=device),
                 "val_acc": evaluate(model, splits.search_eval, batch_size=bs, device=device),
                 "epochs": cfg.train.epochs, "dataset": splits.info(), "arch": dict(getattr(model, "arch_meta", {})),
                 "biops": ops["biops"], "flops": ops["flops"], "params": ops["params"], "layers": ops["layers"],
                 "energy_uj": estimate_model(model, (splits.in_channels, splits.image_size, splits.image_size),
                                             cfg.hardware.spec(("energy",)))["energy_uj"],
                 "hardware_preset": cfg.hardware.preset}
        run.write_result("final.json", final)
        run.log(f"test accuracy {pct(final['test_acc'])} (val {pct(final['val_acc'])}) after {cfg.train.epochs} "
                "epochs", echo=False)
    return final


def _follow_rank0(cfg: TrainRunConfig, out_dir: Any, splits: Any, model: nn.Module, optimizer: Any,
                  scheduler: Any, device: torch.device) -> dict:
    """A rank > 0 under torchrun: no run folder; rank 0's resume epoch and checkpoint, then the same fit()."""
    start = distributed.share()  # rank 0's failure to open the run raises here
    if start:
        path = Path(out_dir) / "checkpoints" / CHECKPOINT
        ck = load_payload(path, CKPT_FIELDS)
        for target, key in ((model, "state_dict"), (optimizer, "optimizer"), (scheduler, "scheduler")):
            load_state(target, ck[key], path)
    fit(model, splits.search_train, cfg.train, device=device, seed=cfg.seed, optimizer=optimizer,
        scheduler=scheduler, start_epoch=start, eval_split=splits.search_eval,
        batch_context=_noise_context(cfg, start, device), desc="epoch")
    return {}


def _noise_context(cfg: TrainRunConfig, start_epoch: int, device: torch.device) -> Any:
    """The noise-aware `batch_context` of `cfg.noise` (None when sigma is 0): its generator is seeded by
    (seed, rank, start epoch), so a resumed run draws reproducibly (though not the uninterrupted run's draws)."""
    if cfg.noise.gaussian_sigma == 0:
        return None
    seed = derive_seed(cfg.seed, "noise-aware", distributed.rank(), start_epoch)
    return noise_batch_context(cfg.noise.defect(), make_generator(seed, device))


def _epoch(record: dict) -> int:
    e = record.get("epoch")
    return e if isinstance(e, int) and not isinstance(e, bool) else 1 << 62  # unreadable: dropped on resume
