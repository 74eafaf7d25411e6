"""Models from outside cimnas, resolved in ONE place: `PATH.py:FACTORY`, `torchvision:NAME`, `timm:NAME`.

    model = external_model("my_nets.py:resnet18", in_channels=3, num_classes=10, image_size=32,
                           rules={"first": "digital"}, default="binary")

- `PATH.py:FACTORY` imports the user's file and calls FACTORY: this RUNS THE USER'S CODE (it is theirs, named on
  their command line; a checkpoint never names code that cimnas would run on its own, see `rebuild_external`).
  The factory receives those of `num_classes`, `in_channels`, `image_size` its signature names.
- `torchvision:NAME` / `timm:NAME` build the named architecture WITHOUT pretrained weights (nothing downloads at
  run time): `torchvision.models.get_model(NAME, weights=None, num_classes=...)`, `timm.create_model(NAME,
  pretrained=False, num_classes=..., in_chans=...)`. Both are optional extras pinned to the torch cimnas runs on
  (pyproject.toml `vision` / `timm`); where they cannot be imported the error names the pair to install.
- `weights`: a local file, either a plain PyTorch `state_dict` (what `torch.save(model.state_dict())` writes) or
  a cimnas checkpoint; loaded with `weights_only=True` into the model *before* conversion (the crossbar layers
  keep the parameter names, so a state_dict of the converted model loads as well).

The built model is converted (`cimnas.nn.convert`), gets `input_shape` and an `arch_meta` whose `source` and
`conversion` let `load_model` rebuild it from a checkpoint (`model_payload`): the same source, the same
factory arguments, the same per-layer recipe.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.convert import apply_recipe, convert
from cimnas.utils.io import load_checkpoint

#: torch minor version -> the torchvision minor version built against it (torchvision's release table)
TORCHVISION_FOR_TORCH = {"2.9": "0.24", "2.10": "0.25", "2.11": "0.26", "2.12": "0.27", "2.13": "0.28",
                         "2.14": "0.29"}
EXTERNAL_PREFIXES = ("torchvision:", "timm:")
FACTORY_ARGS = ("num_classes", "in_channels", "image_size")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: kind `file` (target = path, factory = function name), `torchvision` or `timm`."""

    kind: str
    target: str
    factory: str = ""

    @property
    def spec(self) -> str:
        return f"{self.target}:{self.factory}" if self.kind == "file" else f"{self.kind}:{self.target}"


def is_external(name: Any) -> bool:
    """True for `torchvision:NAME`, `timm:NAME` and `PATH.py:FACTORY` (not a registered cimnas model name)."""
    return isinstance(name, str) and (name.startswith(EXTERNAL_PREFIXES) or ".py:" in name)


def parse_source(text: str) -> ModelSource:
    """A ModelSource from `PATH.py:FACTORY`, `torchvision:NAME` or `timm:NAME`; anything else is a one-line error."""
    if not isinstance(text, str) or not text.strip():
        raise CimnasError(f"a model source is PATH.py:FACTORY, torchvision:NAME or timm:NAME, got {text!r}")
    for kind in ("torchvision", "timm"):
        if text.startswith(kind + ":"):
            name = text[len(kind) + 1:]
            if not name.replace("_", "").replace(".", "").isalnum():
                raise CimnasError(f"{text!r}: {kind} model names are letters, digits, '_' and '.'")
            return ModelSource(kind, name)
    path, sep, factory = text.rpartition(":")
    if not sep or not path.endswith(".py") or not factory.isidentifier():
        raise CimnasError(f"--model-file takes PATH.py:FACTORY (a Python file and the function in it that returns "
                          f"the model), got {text!r}")
    return ModelSource("file", path, factory)


def _file_factory(src: ModelSource) -> Callable[..., Any]:
    """Import the user's file (running its top-level code) and return its factory function."""
    path = Path(src.target)
    if not path.is_file():
        raise CimnasError(f"model file {path} not found; give --model-file PATH.py:FACTORY")
    name = f"cimnas_user_model_{abs(hash(str(path.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CimnasError(f"{path} cannot be imported as a Python file; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses / pickling inside the user's file look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        where = f"line {e.lineno}: " if e.lineno else ""
        raise CimnasError(f"{path} is not valid Python ({where}{e.msg}); give the .py file that defines the model"
                          ) from None
    except Exception as e:  # the user's top-level code: any exception type
        sys.modules.pop(name, None)
        raise CimnasError(f"importing {path} failed ({type(e).__name__}: {_first_line(e)}); fix the file") from e
    fn = getattr(module, src.factory, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and getattr(v, "__module__", "") == name)
        raise CimnasError(f"{path} has no function {src.factory!r}; it defines: "
                          f"{', '.join(found) or 'nothing callable'}")
    return fn


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _import_extra(kind: str) -> Any:
    """torchvision.models or timm, or a one-line error naming the torch / torchvision pair to install."""
    tv = TORCHVISION_FOR_TORCH.get(".".join(torch.__version__.split("+")[0].split(".")[:2]), "matching")
    pair = (f"torch {torch.__version__} needs torchvision {tv}.x: pip install 'torchvision=={tv}.*' --index-url "
            "https://download.pytorch.org/whl/cpu (or the CUDA index of your torch), then pip install 'cimnas["
            f"{'timm' if kind == 'timm' else 'vision'}]'")
    try:
        return importlib.import_module("timm" if kind == "timm" else "torchvision.models")
    except ModuleNotFoundError as e:
        raise CimnasError(f"--model {kind}:NAME needs the optional package {e.name or kind}, which is not installed; "
                          f"{pair}") from None
    except Exception as e:  # a torchvision built for another torch fails at import in many ways
        raise CimnasError(f"{kind} cannot be imported ({type(e).__name__}: {_first_line(e)}); it does not match "
                          f"the installed torch: {pair}") from None


def _call_factory(src: ModelSource, fn: Callable[..., Any], kwargs: dict) -> nn.Module:
    try:
        params = inspect.signature(fn).parameters
        takes_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_kw = {}, False
    call = {k: v for k, v in kwargs.items() if k in params or (takes_kw and src.kind != "file")}
    try:
        model = fn(**call)
    except CimnasError:
        raise
    except Exception as e:  # the user's (or the library's) code: any exception type
        raise CimnasError(f"the model factory {src.spec} raised {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise CimnasError(f"the model factory {src.spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_source(src: ModelSource, *, in_channels: int, num_classes: int, image_size: Any) -> nn.Module:
    """The plain (unconverted) model of a source, freshly initialised, without pretrained weights."""
    if src.kind == "file":
        return _call_factory(src, _file_factory(src), {"num_classes": num_classes, "in_channels": in_channels,
                                                       "image_size": image_size})
    lib = _import_extra(src.kind)
    if src.kind == "torchvision":
        known = set(lib.list_models())
        if src.target not in known:
            raise CimnasError(f"torchvision has no model {src.target!r}; e.g. {', '.join(sorted(known)[:8])}, ...")
        return _call_factory(src, lambda **kw: lib.get_model(src.target, weights=None, **kw),
                             {"num_classes": num_classes})
    if not lib.is_model(src.target):
        raise CimnasError(f"timm has no model {src.target!r}; see timm.list_models()")
    return _call_factory(src, lambda **kw: lib.create_model(src.target, pretrained=False, **kw),
                         {"num_classes": num_classes, "in_chans": in_channels})


def read_state_dict(path: str | Path) -> dict:
    """A state_dict from a plain `torch.save(model.state_dict())` file or a cimnas checkpoint (weights_only)."""
    obj = load_checkpoint(path)
    sd = obj.get("state_dict") if isinstance(obj.get("state_dict"), dict) else obj
    if not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CimnasError(f"{path} holds no state_dict (a mapping of parameter names to tensors); save it with "
                          "torch.save(model.state_dict(), PATH)")
    return sd


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a plain state_dict / cimnas checkpoint into `model` (strict); a misfit is one line naming a key."""
    sd = read_state_dict(path)
    try:
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, ValueError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
        raise CimnasError(f"weights file {path} does not fit the model ({detail[:300]}); give the weights saved "
                          "from this architecture") from e


def external_model(source: str | ModelSource, *, in_channels: int, num_classes: int, image_size: Any,
                   rules: Mapping[str, Any] | None = None, default: Any = "binary", weights: str | Path | None = None,
                   recipe: dict | None = None, seed: int | None = None, refactor: Any = None) -> nn.Module:
    """Build, (optionally) load weights into, and convert a model from outside (module docstring).

    `recipe`: a stored `Conversion.to_dict()` (a checkpoint's) instead of `rules` / `default` / `refactor`.
    `refactor` (True or RefactorOptions fields): HAWIS's topology modification after the conversion
    (`cimnas.nn.convert.refactor_converted`). `seed` seeds the initialisation (the global RNG is left untouched).
    """
    src = source if isinstance(source, ModelSource) else parse_source(source)
    size = tuple(image_size) if isinstance(image_size, list | tuple) else (int(image_size), int(image_size))
    shape = (int(in_channels), int(size[0]), int(size[1]))
    image_arg = size[0] if size[0] == size[1] else size
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        model = build_source(src, in_channels=in_channels, num_classes=num_classes, image_size=image_arg)
    if weights is not None:
        load_weights(model, weights)
    with torch.random.fork_rng(devices=[]):  # a classifier the re-factorization re-sizes is initialised here
        if seed is not None:
            torch.manual_seed(int(seed) + 1)
        conv = apply_recipe(model, recipe, shape) if recipe is not None else convert(
            model, rules, default=default, input_shape=shape, refactor=refactor)
    model.input_shape = shape
    model.arch_meta = {"name": src.spec, "source": src.spec, "in_channels": int(in_channels),
                       "num_classes": int(num_classes), "image_size": list(size) if size[0] != size[1] else size[0],
                       "conversion": conv.to_dict()}
    return model


def rebuild_external(arch_meta: dict, model_file: str | None = None) -> nn.Module:
    """The model of a checkpoint whose `arch` names an outside source (fresh weights; `load_model` loads them).

    torchvision / timm sources are rebuilt by name. A `PATH.py:FACTORY` source is user code: it is run only when
    the caller names it (`model_file`, the --model-file option), never because a checkpoint says so.
    """
    spec = arch_meta.get("source")
    src = parse_source(spec)
    if src.kind == "file":
        if model_file is None:
            raise CimnasError(f"this checkpoint holds a model built by {spec}; cimnas does not run code a checkpoint "
                              f"names: pass --model-file {spec} (or model_file=) to rebuild it")
        given = parse_source(model_file)
        if given.factory != src.factory:
            raise CimnasError(f"the checkpoint was built by factory {src.factory!r}, --model-file names "
                              f"{given.factory!r}; pass --model-file PATH.py:{src.factory}")
        src = given  # the file may have moved; the factory name must agree
    for k in ("in_channels", "num_classes", "image_size", "conversion"):
        if k not in arch_meta:
            raise CimnasError(f"arch metadata lacks {k!r}; the checkpoint is incomplete")
    return external_model(src, in_channels=arch_meta["in_channels"], num_classes=arch_meta["num_classes"],
                          image_size=arch_meta["image_size"], recipe=arch_meta["conversion"])


def load_any(path: str | Path, source: str | None = None, *, in_channels: int | None = None,
             num_classes: int | None = None, image_size: Any = None, rules: Mapping[str, Any] | None = None,
             default: Any = "binary") -> tuple[nn.Module, dict]:
    """(model, checkpoint dict) of a cimnas checkpoint (`load_model`, `source` = the --model-file of an outside
    model's checkpoint), or of a plain state_dict file plus its `source` (built for the given shape, the weights
    loaded, then converted by `rules` / `default`)."""
    from cimnas.nn.models import load_model
    from cimnas.utils.io import CHECKPOINT_FORMAT

    ckpt = load_checkpoint(path)
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        if rules:
            raise CimnasError(f"{path} is a cimnas checkpoint and carries its own conversion; drop --rule / "
                              "--keep-digital")
        return load_model(path, model_file=source if source is not None and parse_source(source).kind == "file"
                          else None)
    if source is None:
        raise CimnasError(f"{path} is not a cimnas checkpoint; a plain state_dict needs the model it belongs to: "
                          "--model-file PATH.py:FACTORY or --model torchvision:NAME")
    if in_channels is None or num_classes is None or image_size is None:
        raise CimnasError(f"{path} is a plain state_dict: name the dataset (--dataset) so the model is built for "
                          "its input shape and classes")
    model = external_model(source, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                           rules=rules, default=default, weights=path)
    return model, {"arch": model.arch_meta, "dataset": {}, "metrics": {}}


__all__ = ["ModelSource", "TORCHVISION_FOR_TORCH", "build_source", "external_model", "is_external", "load_any",
           "load_weights",
           "parse_source", "read_state_dict", "rebuild_external"]
