"""Model zoo: `MODELS` registry, `build_model`, `rebuild_model`, `load_model`, named architectures.

    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32,
                        widths="hawis-a", precision="binary")

- `widths`: a list (one entry per searchable layer, `model.base_widths` order) or the name of a
  published architecture (`named_widths`); overrides `width_mult` (uniform U-kx widening).
- `precision`: "float" | "binary" (float model, then `cimnas.nn.refactor.refactor` with
  `refactor` options, HAWIS III-A-1) | "kbit" (DoReFa `bits`-bit weights and activations on every
  conv/FC, first and last included: the Quan-8bit baseline).
- `model.arch_meta` holds the name and every build argument (plain JSON); `rebuild_model`
  builds the same structure from it; checkpoints store it (`save_model_checkpoint`).

Every module in this package is imported, so a file that registers a model with
`@MODELS.register` (e.g. `uae_cnn.py`) is picked up automatically.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.limits import check_params
from cimnas.nn.models._common import MODELS, NAMED_WIDTHS, WidthSearchable, image_hw, named_widths, uniform_widths
from cimnas.nn.refactor import RefactorOptions, quantize_kbit
from cimnas.nn.refactor import refactor as refactor_fn
from cimnas.utils.io import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint

PRECISIONS = ("float", "binary", "kbit")


def _import_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


def _call_builder(name: str, fn, args: dict) -> nn.Module:
    params = inspect.signature(fn).parameters
    takes_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    call = {k: v for k, v in args.items() if k in params or takes_kw or k not in ("precision", "bits")}
    unknown = [k for k in call if k not in params and not takes_kw]
    if unknown:
        valid = [k for k in params if k not in ("in_channels", "num_classes", "image_size", "widths")]
        raise CimnasError(f"model {name!r} has no option(s) {unknown}; its options: {', '.join(valid) or 'none'}")
    try:
        return fn(**call)
    except TypeError as e:
        raise CimnasError(f"bad arguments for model {name!r}: {e}") from e


def build_model(name: str, **kw: Any) -> nn.Module:
    """Build a registered model (see module docstring and `_build_model`). The one limits check of every model,
    whether from a config, a file, an override or a checkpoint: it is first built on the `meta` device (no
    memory) and refused over `CIMNAS_MAX_PARAMS` (cimnas.limits) before any weight is allocated."""
    if torch.empty(0).device.type != "meta":  # (inside a meta build already: that build is the probe)
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                probe = _build_model(name, **kw)
        except (RuntimeError, NotImplementedError):  # a layer without meta support: nothing to estimate with
            probe = None
        if probe is not None:
            check_params(sum(p.numel() for p in probe.parameters()), f"model {name}")
    return _build_model(name, **kw)


def _build_model(name: str, *, in_channels: int, num_classes: int, image_size: int | Sequence[int],
                 widths: Sequence[int] | str | None = None, width_mult: float = 1.0, precision: str = "float",
                 bits: int = 8, refactor: Any = None, seed: int | None = None, **kw: Any) -> nn.Module:
    """Build a registered model (see module docstring). `seed` (optional) seeds the weight init;
    it is not part of `arch_meta` (a checkpoint restores the weights)."""
    fn = MODELS.get(name)
    if precision not in PRECISIONS:
        raise CimnasError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    for what, v in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CimnasError(f"{what} must be a positive integer, got {v!r}")
    h, w = image_hw(image_size)
    size = h if h == w else (h, w)
    if refactor is not None and precision != "binary":
        raise CimnasError("refactor options apply only to precision='binary'; drop them or set precision: binary")
    opts = RefactorOptions.from_any(refactor) if precision == "binary" else None

    base_args = dict(in_channels=in_channels, num_classes=num_classes, image_size=size, precision=precision,
                     bits=bits, **kw)
    rng = torch.random.fork_rng() if seed is not None else nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(int(seed))
        resolved = widths
        if isinstance(widths, str):
            resolved = named_widths(name, widths)
        elif widths is None and width_mult != 1.0:
            probe = _call_builder(name, fn, dict(base_args, widths=None))
            if not isinstance(probe, WidthSearchable):
                raise CimnasError(f"model {name!r} has no width vector; width_mult does not apply")
            resolved = uniform_widths(probe.base_widths, width_mult)
        elif widths is not None:
            resolved = list(widths)
        model = _call_builder(name, fn, dict(base_args, widths=resolved))
        model.input_shape = (in_channels, h, w)
        if precision == "binary":
            refactor_fn(model, opts, model.input_shape)
        elif precision == "kbit":
            quantize_kbit(model, bits)
    # bits as built: k for kbit, 1 for binary (every conv / FC is 1-bit), None for float (a binary model's
    # arch once said bits: 8, the unused default)
    built_bits = {"kbit": bits, "binary": 1}.get(precision)
    model.arch_meta = _jsonable({
        "name": name, "in_channels": in_channels, "num_classes": num_classes, "image_size": size,
        "widths": widths, "width_mult": width_mult, "precision": precision, "bits": built_bits,
        "refactor": None if opts is None else opts.__dict__.copy(), **kw,
    })
    return model


def rebuild_model(arch_meta: dict, model_file: str | None = None) -> nn.Module:
    """Build the structure described by `model.arch_meta` again (fresh weights). A model from outside cimnas
    (`arch_meta["source"]`, cimnas.nn.zoo) is rebuilt by its source and conversion recipe; a `PATH.py:FACTORY`
    source only when `model_file` names it (cimnas never runs code a checkpoint names)."""
    if not isinstance(arch_meta, dict) or "name" not in arch_meta:
        raise CimnasError("arch metadata must be a dict with a 'name'; the checkpoint may not be a cimnas one")
    if "source" in arch_meta:
        from cimnas.nn.zoo import rebuild_external

        model = rebuild_external(arch_meta, model_file)
        if "group_widths" in arch_meta:  # sliced per channel group by a width search (cimnas.nn.slimmable)
            from cimnas.nn.slimmable import rebuild_sliced

            return rebuild_sliced(model, arch_meta)
        return model
    meta = dict(arch_meta)
    name = meta.pop("name")
    for k in ("in_channels", "num_classes", "image_size"):
        if k not in meta:
            raise CimnasError(f"arch metadata lacks {k!r}; the checkpoint is incomplete")
    try:  # a crafted description must not allocate: count its parameters on the meta device first
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            probe = build_model(name, **meta)
    except (TypeError, ValueError) as e:
        raise CimnasError(f"arch metadata does not describe a {name} model ({e}); the checkpoint is corrupt") from e
    check_params(sum(p.numel() for p in probe.parameters()), f"the checkpoint's {name} model")
    return build_model(name, **meta)


def model_payload(model: nn.Module, *, dataset: dict | None = None, config: dict | None = None, epoch: int = 0,
                  optimizer: Any = None, scheduler: Any = None, metrics: dict | None = None, **extra: Any) -> dict:
    """The one checkpoint payload of every command (docs/architecture.md): arch (`model.arch_meta`, so
    `load_model` rebuilds it), state_dict (on the CPU), dataset shape, resolved config, epoch, optimiser and
    scheduler states (objects or their state dicts), metrics, plus pipeline-specific `extra` fields."""
    if not hasattr(model, "arch_meta"):
        raise CimnasError("model has no arch_meta; build it with cimnas.nn.models.build_model")
    ds = {k: _jsonable((dataset or {}).get(k)) for k in ("name", "in_channels", "image_size", "num_classes")}

    def state(obj: Any) -> Any:
        return obj.state_dict() if hasattr(obj, "state_dict") else obj

    return {"format": CHECKPOINT_FORMAT, "arch": _jsonable(dict(model.arch_meta)),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "dataset": ds,
            "config": config or {}, "epoch": int(epoch), "optimizer": state(optimizer),
            "scheduler": state(scheduler), "metrics": metrics or {}, **extra}


def save_model_checkpoint(path: str | Path, model: nn.Module, dataset_info: dict, config: dict | None = None,
                          epoch: int = 0, optimizer_state: dict | None = None, metrics: dict | None = None) -> None:
    """Atomically save `model_payload(...)` to `path`."""
    save_checkpoint(path, model_payload(model, dataset=dataset_info, config=config, epoch=epoch,
                                        optimizer=optimizer_state, metrics=metrics))


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               model_file: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild and load any cimnas model checkpoint (`model_payload`) -> (model, checkpoint dict).
    `model_file` (PATH.py:FACTORY): the factory of a checkpoint of a converted outside model (cimnas.nn.zoo)."""
    ckpt = load_checkpoint(path, map_location=map_location)
    if ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("arch"), dict) \
            or not isinstance(ckpt.get("state_dict"), dict):
        raise CimnasError(f"{path} is not a {CHECKPOINT_FORMAT} model checkpoint (format "
                          f"{ckpt.get('format')!r}); point to a checkpoint written by this cimnas")
    model = rebuild_model(ckpt["arch"], model_file)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines() or [type(e).__name__]
        raise CimnasError(f"checkpoint {path} does not match its architecture "
                          f"({first[1].strip() if len(first) > 1 else first[0]}); re-create it") from e
    model.to(map_location)
    return model, ckpt


def list_models() -> list[dict]:
    """Name, one-line doc and named architectures of every registered model."""
    docs = MODELS.describe()
    return [{"name": n, "doc": docs[n], "named_architectures": sorted(NAMED_WIDTHS.get(n, {}))} for n in docs]


_import_all()

__all__ = ["MODELS", "NAMED_WIDTHS", "PRECISIONS", "WidthSearchable", "build_model", "list_models", "load_model",
           "model_payload", "named_widths", "rebuild_model", "save_model_checkpoint"]
