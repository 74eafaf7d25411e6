"""`cimnas train`: typed config, run folder, resumable training of one model on one dataset.

Run folder layout (DESIGN.md):
  config.yaml     the resolved config (written once; on --resume it must match)
  metrics.jsonl   one line per finished epoch: epoch, loss, reg, train_acc, test_acc, lr, time_s
  checkpoint.pt   after every epoch, atomic: model (arch + state_dict), optimizer, scheduler and
                  generator states, so `--resume` continues exactly where the run stopped
  final.json      test accuracy and BiOps / FLOPs / params of the trained model
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from cimnas.config import diff_configs, to_dict
from cimnas.errors import CimnasError, check
from cimnas.utils.io import append_jsonl, atomic_write_bytes, load_checkpoint, read_jsonl, save_checkpoint, write_json
from cimnas.utils.seed import make_generator, resolve_device, seed_everything

CHECKPOINT_FORMAT = "cimnas-checkpoint-v1"
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "final.json")
RESUMABLE_CHANGES = ("train.epochs", "train.progress")  # keys that may differ on --resume


@dataclass
class DataConfig:
    """Which dataset and how it is split (cimnas.data.load_dataset)."""

    name: str = "digits"  # registered dataset name (`cimnas datasets`)
    data_dir: str | None = None  # folder with the dataset files (None = the dataset's default place)
    seed: int = 0  # seeds the limit subset and the search split
    limit: int | None = None  # at most this many (seeded random) training samples
    test_limit: int | None = None  # at most this many test samples (None = same as limit)
    augment: bool | None = None  # None = dataset default (crop+flip on for CIFAR-10, off otherwise)
    search_fraction: float | None = None  # held-out share for search_eval (None = dataset default)

    def validate(self) -> None:
        from cimnas.data import DATASETS

        DATASETS.get(self.name)  # unknown name -> CimnasError listing valid ones
        for key in ("limit", "test_limit"):
            v = getattr(self, key)
            check(v is None or v >= 2, f"config key 'data.{key}' must be >= 2 (or null), got {v}")
        f = self.search_fraction
        check(f is None or 0.0 < f < 1.0, f"config key 'data.search_fraction' must be in (0, 1), got {f}")


@dataclass
class ModelConfig:
    """Which network (cimnas.nn.models.build_model) and how it is quantized."""

    name: str = "resnet20"  # registered model name (`cimnas models`)
    widths: list[int] | str | None = None  # per-layer widths, a named arch (hawis-a), or null = 1x
    width_mult: float = 1.0  # uniform widening U-kx applied to the base widths
    precision: Literal["float", "binary", "kbit"] = "binary"  # binary = HAWIS re-factorization
    bits: int = 8  # weight / activation bits for precision=kbit (DoReFa)
    topology_mod: bool = True  # HAWIS TM: drop the avg-pool before the classifier, flatten instead
    thermometer: bool = False  # thermometer-code the input so the first layer sees binary inputs
    thermometer_levels: int = 32  # levels per input channel of the thermometer code

    def validate(self) -> None:
        try:
            from cimnas.nn.models import MODELS
        except ImportError:  # model zoo not installed yet: build_model reports the name later
            MODELS = None
        if MODELS is not None:
            MODELS.get(self.name)
        if isinstance(self.widths, list):
            bad = [w for w in self.widths if w <= 0]
            if bad:
                raise CimnasError(f"config key 'model.widths': widths must be positive integers, got {bad[0]}")
            check(len(self.widths) > 0, "config key 'model.widths': empty list; use null for the 1x widths")
        check(self.width_mult > 0, f"config key 'model.width_mult' must be > 0, got {self.width_mult}")
        check(1 <= self.bits <= 16, f"config key 'model.bits' must be in 1..16, got {self.bits}")
        check(self.thermometer_levels >= 1,
              f"config key 'model.thermometer_levels' must be >= 1, got {self.thermometer_levels}")


@dataclass
class TrainConfig:
    """Optimisation (HAWIS: SGD momentum 0.9, lr 0.1, x0.1 at {200, 260, 320} of 400 epochs)."""

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4  # L2 coefficient, used when regularizer = l2
    milestones: list[int] = field(default_factory=list)  # epochs where lr is multiplied by gamma
    gamma: float = 0.1
    regularizer: Literal["none", "l2", "two_side"] = "l2"  # two_side = HAWIS Eq. 4 instead of L2
    w0: float = 0.01  # two-side target magnitude |w| -> w0 (authors' code: 0.01)
    reg_coef: float = 1e-4  # two-side coefficient (authors' code: 1e-4)
    seed: int = 0  # model init and batch order
    device: str = "auto"  # auto = cuda if present, else cpu
    progress: bool = True  # tqdm bar when stderr is a terminal

    def validate(self) -> None:
        check(self.epochs >= 1, f"config key 'train.epochs' must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"config key 'train.batch_size' must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, f"config key 'train.eval_batch_size' must be >= 1, got {self.eval_batch_size}")
        check(self.lr > 0, f"config key 'train.lr' must be > 0, got {self.lr}")
        check(0 <= self.momentum < 1, f"config key 'train.momentum' must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"config key 'train.weight_decay' must be >= 0, got {self.weight_decay}")
        check(0 < self.gamma <= 1, f"config key 'train.gamma' must be in (0, 1], got {self.gamma}")
        check(self.milestones == sorted(set(self.milestones)) and all(m > 0 for m in self.milestones),
              f"config key 'train.milestones' must be increasing positive epochs, got {self.milestones}")
        check(self.w0 >= 0 and self.reg_coef >= 0, "config keys 'train.w0' and 'train.reg_coef' must be >= 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise CimnasError(f"config key 'train.device' must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class TrainRunConfig:
    """Root config of `cimnas train` (configs/train/*.yaml)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------- building blocks
def load_splits(cfg: DataConfig, device: torch.device) -> Any:
    from cimnas.data import load_dataset

    return load_dataset(cfg.name, data_dir=cfg.data_dir, seed=cfg.seed, search_fraction=cfg.search_fraction,
                        device=device, limit=cfg.limit, test_limit=cfg.test_limit, augment=cfg.augment)


def build_from_config(cfg: ModelConfig, splits: Any) -> nn.Module:
    """build_model(...) for the dataset's shape; refactor options apply to precision=binary."""
    from cimnas.nn import models
    from cimnas.nn.refactor import RefactorOptions

    refactor = None
    if cfg.precision == "binary":
        refactor = RefactorOptions(topology_mod=cfg.topology_mod, thermometer=cfg.thermometer,
                                          thermometer_levels=cfg.thermometer_levels)
    return models.build_model(cfg.name, in_channels=splits.in_channels, num_classes=splits.num_classes,
                              image_size=splits.image_size, widths=cfg.widths, width_mult=cfg.width_mult,
                              precision=cfg.precision, bits=cfg.bits, refactor=refactor)


def make_regularizer(cfg: TrainConfig) -> Callable[[nn.Module], torch.Tensor] | None:
    if cfg.regularizer == "two_side":
        from cimnas.nn.regularizers import two_side_regularizer

        return lambda m: two_side_regularizer(m, cfg.w0, cfg.reg_coef)
    return None


def ops_summary(model: nn.Module, splits: Any) -> dict:
    """Totals and per-layer BiOps / FLOPs / params (HAWIS Tables III/IV columns)."""
    from cimnas.nn.counting import count_ops, trace_layers

    shape = (splits.in_channels, splits.image_size, splits.image_size)
    return count_ops(trace_layers(model, shape))


# ---------------------------------------------------------------- run folder
def existing_run_files(out_dir: Path) -> list[str]:
    return [f for f in RUN_FILES if (out_dir / f).exists()]


def _check_resume_config(saved: dict, now: dict, where: Path) -> None:
    diff = [k for k in diff_configs(saved, now) if k not in RESUMABLE_CHANGES]
    if diff:
        raise CimnasError(f"cannot resume {where}: config differs from the saved run in {', '.join(diff)}; "
                          "use the same config (or a new --out folder)")


def run_training(cfg: TrainRunConfig, out_dir: str | Path, resume: bool = False,
                 on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train `cfg.model` on `cfg.data` into run folder `out_dir`; returns the final.json dict.

    resume=False refuses a folder that already holds a run (nothing is overwritten);
    resume=True continues from checkpoint.pt after checking that the config matches.
    `on_epoch_end(epoch, record)` is called after each epoch's checkpoint is written.
    """
    from cimnas.train import evaluate, make_optimizer, make_scheduler, train_epoch

    out = Path(out_dir)
    cfg_dict = to_dict(cfg)
    found = existing_run_files(out) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise CimnasError(f"--out {out} is a file; give a folder path")
    if found and not resume:
        raise CimnasError(f"{out} already holds a run ({', '.join(found)}); pass --resume to continue it "
                          "or choose a new --out folder")
    ckpt = None
    if resume and not (out / "checkpoint.pt").exists():
        if not (out / "config.yaml").exists():
            raise CimnasError(f"nothing to resume in {out}: no checkpoint.pt; run without --resume")
        # stopped before the first checkpoint: start again from epoch 0 with the same config
        _check_resume_config(_read_config_yaml(out / "config.yaml"), cfg_dict, out)
    elif resume:
        ckpt = load_checkpoint(out / "checkpoint.pt")
        if ckpt.get("format") != CHECKPOINT_FORMAT or "state_dict" not in ckpt or "config" not in ckpt:
            raise CimnasError(f"{out / 'checkpoint.pt'} is not a cimnas training checkpoint; remove it or "
                              "choose a new --out folder")
        _check_resume_config(ckpt["config"], cfg_dict, out)

    device = resolve_device(cfg.train.device)
    splits = load_splits(cfg.data, device)
    seed_everything(cfg.train.seed)  # parameter init inside torch.nn layers uses the global RNG
    model = build_from_config(cfg.model, splits).to(device)
    t = cfg.train
    optimizer = make_optimizer(model, lr=t.lr, momentum=t.momentum,
                               weight_decay=t.weight_decay if t.regularizer == "l2" else 0.0)
    scheduler = make_scheduler(optimizer, t.milestones, t.gamma)
    generator = make_generator(t.seed)
    regularizer = make_regularizer(t)
    start_epoch = 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["state_dict"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            generator.set_state(ckpt["generator"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CimnasError(f"{out / 'checkpoint.pt'} does not match this model/config ({type(e).__name__}); "
                              "choose a new --out folder") from e
        start_epoch = int(ckpt["epoch"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False).encode())
    _drop_metrics_after(out / "metrics.jsonl", start_epoch)

    test_acc = float("nan")
    for epoch in range(start_epoch, t.epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        stats = train_epoch(model, splits.train, optimizer, batch_size=t.batch_size, generator=generator,
                            device=device, regularizer=regularizer, progress=t.progress,
                            desc=f"epoch {epoch + 1}/{t.epochs}")
        scheduler.step()
        test_acc = evaluate(model, splits.test, batch_size=t.eval_batch_size, device=device)
        record = {"epoch": epoch + 1, "loss": stats["loss"], "reg": stats["reg"], "train_acc": stats["train_acc"],
                  "test_acc": test_acc, "lr": lr, "time_s": round(time.perf_counter() - t0, 3)}
        # metrics first: a crash before the checkpoint leaves a line that resume drops again
        append_jsonl(out / "metrics.jsonl", record)
        save_checkpoint(out / "checkpoint.pt", checkpoint_payload(model, splits, cfg_dict, epoch + 1, optimizer,
                                                                  scheduler, generator, record))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)

    if start_epoch >= t.epochs:  # resumed a finished run: report it again
        test_acc = evaluate(model, splits.test, batch_size=t.eval_batch_size, device=device)
    ops = ops_summary(model, splits)
    final = {"test_acc": test_acc, "epochs": t.epochs, "dataset": splits.info(),
             "arch": _plain(getattr(model, "arch_meta", {"name": cfg.model.name})),
             "biops": ops["biops"], "flops": ops["flops"], "params": ops["params"], "layers": ops["layers"]}
    write_json(out / "final.json", final)
    return final


def _read_config_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CimnasError(f"{path} is not valid YAML; remove the run folder or fix the file") from e
    if not isinstance(data, dict):
        raise CimnasError(f"{path} does not hold a config mapping; remove the run folder or fix the file")
    return data


def checkpoint_payload(model: nn.Module, splits: Any, cfg_dict: dict, epoch: int, optimizer: Any,
                       scheduler: Any, generator: torch.Generator, metrics: dict) -> dict:
    """The checkpoint dict of docs/architecture.md plus scheduler / generator state for exact resume."""
    return {"format": CHECKPOINT_FORMAT, "arch": _plain(getattr(model, "arch_meta", {})),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "dataset": splits.info(), "config": cfg_dict, "epoch": epoch,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(), "metrics": metrics}


def _plain(obj: Any) -> Any:
    """arch_meta as plain containers (dataclasses / tuples -> dicts / lists) for weights_only loads."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _drop_metrics_after(path: Path, epoch: int) -> None:
    """On resume, forget metric lines of epochs after the checkpoint (written before a crash)."""
    rows = read_jsonl(path)
    keep = [r for r in rows if int(r.get("epoch", 0)) <= epoch]
    if len(keep) != len(rows):
        import json

        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in keep).encode())
