"""Typed configs: nested dataclasses filled from YAML and `--set section.key=value` overrides.

Every command uses the same mechanism: `load_config(RootConfig, path, overrides)`.
Unknown keys and values of the wrong type are `CimnasError`s naming the key and the expected type.
A dataclass may define `validate(self)` that raises CimnasError for bad values; it is called
after loading, for every nested section.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from cimnas.errors import CimnasError, check
from cimnas.utils.safe_yaml import (  # noqa: F401 - SAFE_LOADER, safe_yaml and the bounds are used from here too
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    SAFE_LOADER,
    _expanded_size,
    safe_yaml,
    shorten,
)

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML / command-line value to type `tp`, or raise a CimnasError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(value, non_none[0], key)
        for a in non_none:
            try:
                return _coerce(value, a, key)
            except CimnasError:
                continue
        raise CimnasError(f"config key {shorten(key, 120)}: {shorten(value)} is not a {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise CimnasError(f"config key {shorten(key, 120)}: {shorten(value)} is not one of "
                              f"{', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip() != ""] if value.strip() else []
        if not isinstance(value, list | tuple):
            raise CimnasError(f"config key {shorten(key, 120)}: expected a list, got {shorten(value)}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if list in (origin, tp) else tuple(items)
    if origin is dict or tp is dict:  # `options: dict` (bare) too: build_model(**5) was a TypeError traceback
        if not isinstance(value, dict):
            raise CimnasError(f"config key {shorten(key, 120)}: expected a mapping, got {shorten(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise CimnasError(f"config section {shorten(key, 120)}: expected a mapping, got {shorten(value)}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise CimnasError(f"config key {shorten(key, 120)}: expected true/false, got {shorten(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise CimnasError(f"config key {shorten(key, 120)}: expected an integer, got {shorten(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise CimnasError(f"config key {shorten(key, 120)}: expected an integer, got {shorten(value)}")
    if tp is float:
        if isinstance(value, bool):
            raise CimnasError(f"config key {shorten(key, 120)}: expected a number, got {shorten(value)}")
        out = None
        if isinstance(value, int | float):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                pass
        if out is None:
            raise CimnasError(f"config key {shorten(key, 120)}: expected a number, got {shorten(value)}")
        # every float in every config is finite: inf / nan would train to NaN or overflow later
        check(math.isfinite(out),
              f"config key {shorten(key, 120)}: {shorten(value)} is not a finite number; give a finite value")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise CimnasError(f"config key {shorten(key, 120)}: expected a string, got {shorten(value)}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


#: config keys renamed for one vocabulary across commands -> their new name: refused with that hint in a config a
#: person writes, carried over (`migrate_renamed`) in a run folder's stored config.yaml so older runs resume. A
#: two-part key also matches inside a nested section (`base.noise.sigma` -> `base.noise.gaussian_sigma`).
RENAMED: dict[str, str] = {"search.hardware_preset": "hardware.preset", "hardware_preset": "hardware.preset",
                           "defects.sigma": "defects.variation_sigma", "noise.sigma": "noise.gaussian_sigma",
                           "noise.mode": "noise.gaussian_mode"}


def renamed(key: str) -> str | None:
    """The new full dotted name of config key `key` if it was renamed (see RENAMED), else None."""
    for old, new in RENAMED.items():
        if key == old or (old.count(".") == 1 and key.endswith("." + old)):
            return key[: len(key) - len(old)] + new
    return None


def migrate_renamed(data: dict) -> dict:
    """A copy of a stored config mapping with every renamed key moved to its new name (a new key already there wins;
    empty sections are kept)."""
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value

    walk(data, "")
    out: dict = {}
    for key, value in flat.items():
        new = renamed(key)
        if new is not None and new in flat:
            continue
        node = out
        parts = (new or key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys are errors that list the valid ones."""
    if data is None:
        data = {}
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown and renamed(prefix + unknown[0]):
        raise CimnasError(f"config key {prefix + unknown[0]!r} is now {renamed(prefix + unknown[0])!r} (one name "
                          "for each setting across commands; README 'One vocabulary')")
    if unknown:
        raise CimnasError(
            f"unknown config key {shorten(prefix + str(unknown[0]), 120)}; valid keys here: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """A plain dict (YAML/JSON-ready) of a config dataclass."""
    return dataclasses.asdict(cfg)


def validate(cfg: Any, section: str = "") -> None:
    """Call `validate()` on `cfg` and on every nested dataclass section (lists of sections included); a section's
    error names the section (`train: lr must be in (0, 10], got 20.0`) unless its message already starts with it."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in ("seed", "seeds"):  # every config's seeds: one range
            for seed in (v if isinstance(v, list | tuple) else [v]):
                if seed is not None:
                    check_seed(seed, f"{section}{f.name}", v)
        if dataclasses.is_dataclass(v):
            validate(v, f"{section}{f.name}.")
        elif isinstance(v, list | tuple):  # a list of sections (headroom's allocations) is checked item by item
            for i, item in enumerate(v):
                if dataclasses.is_dataclass(item):
                    validate(item, f"{section}{f.name}[{i}].")
    if hasattr(cfg, "validate"):
        try:
            cfg.validate()
        except CimnasError as e:
            name = section.rstrip(".")
            msg = str(e)
            if not name or msg.startswith((name, f"config key '{name}", f"'{name}")):
                raise
            raise CimnasError(f"{name}: {msg}") from e


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a','b','c'], yaml-parsed value; a string where it is not YAML)."""
    if "=" not in text:
        raise CimnasError(f"override {shorten(text)} must look like section.key=value")
    key, raw = text.split("=", 1)
    check(all(p.strip() for p in key.split(".")), f"override {shorten(text)}: the key has an empty part")
    try:
        value = yaml.load(raw, Loader=SAFE_LOADER) if raw != "" else ""
    except yaml.constructor.ConstructorError as e:  # a duplicate key: never silently "the text itself"
        raise CimnasError(f"override {shorten(key)}: {str(e).splitlines()[0]}") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise CimnasError(f"override {shorten(key)}: the number is too long to be a config value") from None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise CimnasError(f"override {shorten(key)} is nested too deeply; write the value out") from None
    check(_expanded_size(value, MAX_CONFIG_NODES) <= MAX_CONFIG_NODES,
          f"override {shorten(key)} expands to more than {MAX_CONFIG_NODES:,} values or {MAX_CONFIG_DEPTH} levels; "
          "write the values out")
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted overrides to a raw config mapping (types are checked later by from_dict)."""
    data = dict(data)
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise CimnasError(f"override {shorten(text)}: {shorten(part)} is not a section")
            node[part] = dict(child)
            node = node[part]
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; missing, empty, binary, oversized or malformed files are CimnasErrors."""
    path = Path(path)
    if not path.is_file():
        raise CimnasError(f"config file not found: {path}")
    try:
        size = path.stat().st_size
        check(size <= MAX_CONFIG_BYTES, f"config file {path} is {size:,} bytes; a config is a small YAML file "
              f"(at most {MAX_CONFIG_BYTES:,} bytes): check the path")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CimnasError(f"config file {path} is a binary file, not a YAML config (not UTF-8 text); "
                          "check the path") from e
    except OSError as e:
        raise CimnasError(f"cannot read config file {path}: {e.strerror}") from e
    check("\x00" not in text, f"config file {path} is a binary file, not YAML; check the path")
    data = safe_yaml(text, f"config file {path}")
    # a config file that sets nothing is a mistake (truncated, the wrong path), never "use the defaults": every
    # command that takes a file would otherwise run its full default budget (HAWIS: 600 episodes) on it
    check(data is not None and data != {}, f"config file {path} is empty (or only comments); write the config's "
          "sections into it or check the path")
    if not isinstance(data, dict):
        raise CimnasError(f"config file {path} must hold a mapping at the top level, not a {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """YAML file (optional) + dotted overrides -> validated dataclass of type `cls`."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(cls, data)
    validate(cfg)
    return cfg


def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts (for resume checks)."""
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, prefix + k + ".")
        elif va != vb:
            out.append(prefix + k)
    return out


def check_seed(seed: Any, key: str, shown: Any = None) -> None:
    """A seed in torch.Generator.manual_seed's range, 0 .. 2**63 - 1 (configs and the commands' --seed)."""
    check(isinstance(seed, int) and 0 <= seed < 2**63,
          f"{key} must be in 0 .. 2**63 - 1, got {seed if shown is None else shown}")


def check_device(device: str, key: str = "device") -> None:
    """A root config's device name: auto, cpu, cuda, cuda:N or mps (whether it exists is checked when it is used,
    `cimnas.device.resolve_device`)."""
    check(device in ("auto", "cpu") or device.startswith(("cuda", "mps")),
          f"{key} must be auto, cpu, cuda or cuda:N, got {device!r}")


# ============================================================================ shared sections
# One vocabulary for every command: `optim`-style training sections, the data section and the model section
# are these classes (pipelines subclass them only to change defaults).


@dataclass
class OptimConfig:
    """How one model is trained: epochs, batches, optimiser, schedule, regulariser (HAWIS Sec. IV: SGD momentum
    0.9, lr 0.1, x0.1 at {200, 260, 320} of 400 epochs, two-side regularization; UAE children: Adam 1e-3)."""

    epochs: int = 10  # passes over the training split (0 = no training)
    batch_size: int = 128
    eval_batch_size: int = 512  # batch size of evaluation passes (no effect on results)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1  # initial learning rate
    momentum: float = 0.9  # SGD momentum (Adam: beta1 stays 0.9)
    nesterov: bool = False
    weight_decay: float = 1e-4  # L2 coefficient of the optimiser, applied when regularizer = l2
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr is multiplied by gamma
    gamma: float = 0.1
    max_batches: int | None = None  # at most this many batches per epoch (small budgets); null = all
    regularizer: Literal["none", "l2", "two_side"] = "l2"  # two_side = HAWIS Eq. 4 instead of L2
    reg_coef: float = 1e-4  # Eq. 4 coefficient (authors' code: 1e-4)
    w0: float = 0.01  # Eq. 4 target magnitude |w| -> w0 (authors' code: 0.01)
    augment: bool = True  # apply the split's own augmentation (none if the dataset has none)
    progress: bool = True  # tqdm bar when stderr is a terminal
    compile: bool = False  # torch.compile the model's training forward (GPU; the first steps pay the compile)
    amp: Literal["off", "bf16"] = "off"  # bf16 autocast of forward (BN statistics, binarization, loss stay fp32)
    channels_last: bool = False  # NHWC memory format for the model and the batches (faster convs on GPUs)

    def validate(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.amp in ("off", "bf16"), f"amp must be off or bf16, got {self.amp!r}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        check(0 < self.lr <= 10, f"lr must be in (0, 10], got {self.lr}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(0 <= self.weight_decay < 1, f"weight_decay must be in [0, 1), got {self.weight_decay}")
        check(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        check(self.milestones == sorted(set(self.milestones)) and all(m > 0 for m in self.milestones),
              f"milestones must be increasing positive epochs, got {self.milestones}")
        check(self.max_batches is None or self.max_batches >= 1, f"max_batches must be >= 1 or null, "
              f"got {self.max_batches}")
        check(0 <= self.reg_coef < 1, f"reg_coef must be in [0, 1), got {self.reg_coef}")
        check(0 <= self.w0 <= 10, f"w0 must be in [0, 10], got {self.w0}")


@dataclass
class DataConfig:
    """Which dataset and how it is split (cimnas.data.load_dataset). The splits: `train` (= `search_train` +
    `search_eval`, seeded), `test`; the held-out `search_eval` part of the training data serves every choice a
    search, a calibration or a model selection makes (the test split gives each final number, once)."""

    name: str = "digits"  # registered dataset name (`cimnas datasets`)
    data_dir: str | None = None  # folder with the dataset files (None = the dataset's default place)
    seed: int | None = None  # seeds the subset and the split (None = the run's seed)
    limit: int | None = None  # at most this many (seeded random) training samples
    test_limit: int | None = None  # at most this many test samples (None = same as limit)
    augment: bool | None = None  # None = dataset default (crop+flip on for CIFAR-10, off otherwise)
    search_fraction: float | None = None  # held-out share of train for search_eval (None = dataset default)
    options: dict = field(default_factory=dict)  # dataset-specific options (e.g. synthetic: image_size)

    def validate(self) -> None:
        for key in ("limit", "test_limit"):
            v = getattr(self, key)
            check(v is None or v >= 2, f"data.{key} must be >= 2 (or null), got {v}")
        f = self.search_fraction
        check(f is None or 0.0 < f < 1.0, f"data.search_fraction must be in (0, 1), got {f}")

    def resolved_seed(self, run_seed: int) -> int:
        return run_seed if self.seed is None else self.seed


@dataclass
class ModelConfig:
    """Which network (cimnas.nn.models.build_model) and how it is quantized / re-factorized."""

    name: str = "resnet20"  # registered model name (`cimnas models`), or PATH.py:FACTORY / torchvision:NAME / timm:NAME
    widths: list[int] | str | None = None  # per-layer widths, a named arch (hawis-a), or null = 1x
    width_mult: float = 1.0  # uniform widening U-kx applied to the base widths
    precision: Literal["float", "binary", "kbit"] = "binary"  # binary = HAWIS re-factorization
    bits: int = 8  # weight / activation bits for precision=kbit (DoReFa)
    topology_mod: bool = True  # HAWIS TM: drop the avg-pool before the classifier, flatten instead
    thermometer: bool = False  # thermometer-code the input so the first layer sees binary inputs
    thermometer_levels: int = 32  # levels per input channel (authors' code: 32)
    options: dict = field(default_factory=dict)  # further build_model keyword arguments of this model
    rules: dict = field(default_factory=dict)  # outside models: {name pattern: precision} (cimnas.nn.convert)
    weights: str | None = None  # outside models: a state_dict / checkpoint file loaded before conversion
    # outside models: HAWIS re-factorization after the conversion (activation modules -> Identity, max-pools into
    # strides, topology_mod / thermometer as above; cimnas.nn.convert.refactor_converted)
    refactor: bool = False

    def validate(self) -> None:
        outside = ":" in self.name  # cimnas.nn.zoo.is_external
        check(outside or (not self.rules and self.weights is None and not self.refactor), "model.rules, "
              "model.weights and model.refactor apply to outside models only (model.name PATH.py:FACTORY, "
              "torchvision:NAME or timm:NAME; cimnas's own models are re-factorized by precision: binary)")
        if isinstance(self.widths, list):
            check(len(self.widths) > 0, "model.widths: empty list; use null for the 1x widths")
            bad = [w for w in self.widths if w <= 0]
            check(not bad, f"model.widths must be positive integers, got {bad[0] if bad else ''}")
        check(0 < self.width_mult <= 64, f"model.width_mult must be in (0, 64], got {self.width_mult}")
        check(1 <= self.bits <= 16, f"model.bits must be in 1..16, got {self.bits}")
        check(1 <= self.thermometer_levels <= 256,
              f"model.thermometer_levels must be in 1..256, got {self.thermometer_levels}")
