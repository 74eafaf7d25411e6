"""In-memory dataset splits, batched augmentation, and the dataset registry.

Small datasets (digits, MNIST, Fashion-MNIST, CIFAR-10) are held as one uint8 image tensor per
source split on the chosen device. A `DataSplit` is a view (an index tensor) into that storage, so
the train / search-train / search-eval / test splits share memory. Batches are drawn by an index
permutation from a `torch.Generator`; augmentation (random crop with zero padding, horizontal
flip) is done on the whole batch with tensor ops, never with a per-image Python loop.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cimnas.device import generator_on
from cimnas.errors import CimnasError
from cimnas.registry import Registry
from cimnas.utils.seed import derive_seed, make_generator

DATASETS = Registry("dataset")


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation applied per batch.

    crop_padding_px: zero padding on each side before a random crop back to the original size
    (CIFAR standard: 4 pixels); 0 disables the crop. hflip: random horizontal flip with p = 0.5.
    """

    crop_padding_px: int = 4
    hflip: bool = True

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Augment a float batch (N, C, H, W) where it lies: per-sample crop offsets and flips are drawn on
        x's device (from `generator`, or from a generator derived from it there: `cimnas.device.generator_on`)
        and applied with batched gathers, no per-image loop and no host round trip."""
        generator = generator_on(generator, x.device)
        n, _, h, w = x.shape
        if self.crop_padding_px > 0:
            p = self.crop_padding_px
            off = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=x.device)
            xp = torch.nn.functional.pad(x, (p, p, p, p))
            rows = off[0][:, None] + torch.arange(h, device=x.device)[None, :]  # (N, H)
            cols = off[1][:, None] + torch.arange(w, device=x.device)[None, :]  # (N, W)
            idx_n = torch.arange(n, device=x.device)[:, None, None]
            # advanced indexing -> (N, H, W, C); back to NCHW
            x = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.hflip:
            flip = torch.rand(n, generator=generator, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x.contiguous()


class DataSplit:
    """A set of labelled images held in memory: `images` (N, C, H, W) integer or float codes,
    divided by `scale` to give floats in [0, 1]; `labels` (N,) long; `indices` selects this split.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale: float,
                 indices: torch.Tensor | None = None, augmentation: Augmentation | None = None):
        self.images = images
        self.labels = labels
        self.scale = float(scale)
        self.indices = indices if indices is not None else torch.arange(len(labels), device=labels.device)
        self.augmentation = augmentation

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def device(self) -> torch.device:
        return self.images.device

    def subset(self, positions: torch.Tensor) -> DataSplit:
        """The split made of `self.indices[positions]` (same storage)."""
        return DataSplit(self.images, self.labels, self.scale,
                         self.indices[positions.to(self.indices.device)], self.augmentation)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All of this split as (x float in [0, 1], y long) (for small splits / analysis)."""
        return self.images[self.indices].float() / self.scale, self.labels[self.indices]

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) batches on the split's device; x float in [0, 1] (N, C, H, W), y long.

        shuffle draws one permutation on the split's device from `generator` (a generator on another device
        seeds one there: `cimnas.device.generator_on`); augment applies this split's `augmentation` (if it has
        one) to each batch with draws from that same generator, on the same device.
        """
        if batch_size < 1:
            raise CimnasError(f"batch size must be >= 1, got {batch_size}")
        n = len(self)
        generator = generator_on(generator, self.indices.device) if shuffle or augment else generator
        if shuffle:
            order = self.indices[torch.randperm(n, generator=generator, device=self.indices.device)]
        else:
            order = self.indices
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = self.images[idx].float() / self.scale
            if augment and self.augmentation is not None:
                x = self.augmentation.apply(x, generator)
            yield x, self.labels[idx]

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


@dataclass
class Splits:
    """The four splits of one dataset. `search_train` and `search_eval` partition `train`."""

    name: str
    train: DataSplit
    search_train: DataSplit
    search_eval: DataSplit
    test: DataSplit
    num_classes: int
    in_channels: int
    image_size: int

    def info(self) -> dict:
        """The dataset record stored in checkpoints (docs/architecture.md)."""
        return {"name": self.name, "in_channels": self.in_channels, "image_size": self.image_size,
                "num_classes": self.num_classes}


@dataclass(frozen=True)
class RawData:
    """What a dataset reader returns: uint8/float image codes (N, C, H, W), labels (N,), scale."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    scale: float


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one dataset and the function that reads it.

    `read(data_dir)` returns `RawData` (in-memory datasets) or a `Splits` builder for lazy ones.
    `how_to_get` is shown when its files are missing.
    """

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    train_size: int
    test_size: int
    search_fraction: float
    augmentation: Augmentation | None  # used when augmentation is switched on
    augment_default: bool
    read: Callable[[Path | None], RawData]
    default_dir: str | None = None
    how_to_get: str = ""
    files: tuple[str, ...] = field(default_factory=tuple)
    lazy_loader: Callable[..., Splits] | None = None
    requires: str | None = None  # optional Python module the reader needs (e.g. torchvision)
    generated: bool = False  # drawn in memory by `read` (no files, nothing bundled)

    def resolve_dir(self, data_dir: str | Path | None) -> Path | None:
        if data_dir is not None:
            return Path(data_dir).expanduser()
        return Path(self.default_dir) if self.default_dir else None

    def availability(self, data_dir: str | Path | None = None) -> tuple[bool, str]:
        """(available, where or why not), without reading the data."""
        if self.requires is not None:
            if importlib.util.find_spec(self.requires) is None:
                return False, f"needs {self.requires} (pip install cimnas[{self.name}])"
        if not self.files:
            return True, "generated (no files)" if self.generated else "bundled"
        d = self.resolve_dir(data_dir)
        if d is None:
            return False, f"needs --data-dir ({self.how_to_get})"
        if not d.is_dir():
            return False, f"{d} not found ({self.how_to_get})"
        for f in self.files:
            if not (d / f).exists() and not (d / (f + ".gz")).exists():
                return False, f"{d / f} missing ({self.how_to_get})"
        return True, str(d)


def one_line(e: BaseException, limit: int = 160) -> str:
    """An exception's text on one short line (library messages may span lines or embed file bytes)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def check_images(name: str, x: torch.Tensor, y: torch.Tensor, spec: DatasetSpec, where: str) -> None:
    """Shape / label checks shared by the readers (wrong image sizes are user errors)."""
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise CimnasError(f"{where}: {name} images must be {shape[0]}x{shape[1]}x{shape[2]}, got "
                          f"{'x'.join(map(str, x.shape[1:]))}; point --data-dir at the real {name} files")
    if x.shape[0] != y.shape[0]:
        raise CimnasError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels; the files do not belong "
                          "together, re-download them")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise CimnasError(f"{where}: labels outside 0..{spec.num_classes - 1}; the label file is corrupt")


def seeded_permutation(n: int, seed: int, label: str) -> torch.Tensor:
    """A permutation of range(n) that depends only on (seed, label): drawn on the CPU whatever the data's device,
    so a dataset's subsets and search split are the same on every machine."""
    return torch.randperm(n, generator=make_generator(derive_seed(seed, label)))


def build_splits(spec: DatasetSpec, raw: RawData, *, seed: int, search_fraction: float,
                 limit: int | None, test_limit: int | None, augment: bool,
                 device: str | torch.device) -> Splits:
    """Move raw data to `device`, apply `limit`, and carve the seeded search split out of train."""
    device = torch.device(device)
    aug = spec.augmentation if augment else None
    if augment and aug is None:
        aug = Augmentation()
    check_images(spec.name, raw.train_x, raw.train_y, spec, "training set")
    check_images(spec.name, raw.test_x, raw.test_y, spec, "test set")

    def make(x: torch.Tensor, y: torch.Tensor, lim: int | None, label: str) -> DataSplit:
        x, y = x.to(device), y.long().to(device)
        idx = torch.arange(len(y), device=device)
        if lim is not None and lim < len(y):
            idx = seeded_permutation(len(y), seed, label)[:lim].sort().values.to(device)
        return DataSplit(x, y, raw.scale, idx, aug)

    train = make(raw.train_x, raw.train_y, limit, "limit-train")
    test = make(raw.test_x, raw.test_y, test_limit if test_limit is not None else limit, "limit-test")
    test.augmentation = None
    n = len(train)
    n_eval = int(round(n * search_fraction))
    if n_eval < 1 or n_eval >= n:
        raise CimnasError(f"search_fraction {search_fraction} leaves an empty search split of {n} training "
                          "samples; use a value in (0, 1) or a larger limit")
    perm = seeded_permutation(n, seed, "search-split")
    search_eval = train.subset(perm[:n_eval].sort().values)
    search_eval.augmentation = None
    search_train = train.subset(perm[n_eval:].sort().values)
    return Splits(spec.name, train, search_train, search_eval, test, spec.num_classes,
                  spec.in_channels, spec.image_size)


def builder_options(name: str) -> list[str]:
    """The option names dataset `name`'s builder accepts (empty for datasets with fixed files)."""
    return list(inspect.signature(DATASETS.get(name)).parameters)


def _options_dict(options: object) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise CimnasError(f"dataset options must be a mapping of name: value, got {type(options).__name__}")
    return dict(options)


def dataset_spec(name: str, options: dict | None = None) -> DatasetSpec:
    """The DatasetSpec of `name` built with `options`; an option the builder lacks is a CimnasError."""
    options = _options_dict(options)
    known = builder_options(name)
    unknown = sorted(str(k) for k in options if k not in known)
    if unknown:
        takes = f"it takes: {', '.join(known)}" if known else "it takes none"
        raise CimnasError(f"dataset {name} has no option {', '.join(unknown)}; {takes}")
    return DATASETS.create(name, **options)


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0,
                 search_fraction: float | None = None, device: str | torch.device = "cpu", *,
                 limit: int | None = None, test_limit: int | None = None,
                 augment: bool | None = None, image_size: int | None = None,
                 options: dict | None = None) -> Splits:
    """Load dataset `name` into seeded train / search_train / search_eval / test splits.

    search_fraction: share of the training set held out as `search_eval` (default per dataset:
    0.2 for CIFAR-10 and the small sets, 0.1 for ImageNet, as in HAWIS stage B).
    limit / test_limit: at most this many (seeded random) samples in train / test.
    augment: None = the dataset's default (on for CIFAR-10 and ImageNet, off otherwise).
    options: keyword arguments of the dataset's registered builder (e.g. synthetic's channels,
    image_size, num_classes, train_size, test_size, seed); unknown keys are errors.
    """
    opts = _options_dict(options)
    if image_size is not None and "image_size" in builder_options(name) and "image_size" not in opts:
        opts["image_size"] = image_size  # a shape-free dataset (synthetic) takes the size as an option
    spec = dataset_spec(name, opts)
    frac = spec.search_fraction if search_fraction is None else float(search_fraction)
    if not 0.0 < frac < 1.0:
        raise CimnasError(f"search_fraction must be in (0, 1), got {frac}")
    for key, v in (("limit", limit), ("test_limit", test_limit)):
        if v is not None and v < 2:
            raise CimnasError(f"{key} must be >= 2 samples, got {v}")
    aug = spec.augment_default if augment is None else bool(augment)
    if spec.lazy_loader is not None:
        return spec.lazy_loader(spec, spec.resolve_dir(data_dir), seed=seed, search_fraction=frac,
                                limit=limit, test_limit=test_limit, augment=aug, device=device,
                                image_size=image_size)
    if image_size is not None and image_size != spec.image_size:
        raise CimnasError(f"{name} images are {spec.image_size}x{spec.image_size}; image_size cannot be changed")
    raw = spec.read(spec.resolve_dir(data_dir))
    return build_splits(spec, raw, seed=seed, search_fraction=frac, limit=limit, test_limit=test_limit,
                        augment=aug, device=device)


def load_from_config(data: Any, run_seed: int, device: str | torch.device = "cpu") -> Splits:
    """The splits a config's `data` section names (`cimnas.config.DataConfig`): the one way every command loads
    its data. Seeded by `data.seed`, else the run's seed. `data.options` are the dataset builder's options (e.g.
    synthetic's channels / num_classes); `image_size` among them is load_dataset's own argument (a fixed-shape
    dataset refuses another size). Unknown options are a one-line error naming the ones the dataset takes."""
    opts = _options_dict(data.options)
    image_size = opts.pop("image_size", None)
    return load_dataset(data.name, data_dir=data.data_dir, seed=data.resolved_seed(run_seed),
                        search_fraction=data.search_fraction, device=device, limit=data.limit,
                        test_limit=data.test_limit, augment=data.augment, image_size=image_size,
                        options=opts or None)


def dataset_table(data_dir: str | Path | None = None) -> list[dict]:
    """One row per registered dataset: shape, classes, sizes and whether its files are present."""
    rows = []
    for name in DATASETS.names():
        spec: DatasetSpec = DATASETS.create(name)
        ok, where = spec.availability(data_dir)
        rows.append({"name": name, "shape": [spec.in_channels, spec.image_size, spec.image_size],
                     "classes": spec.num_classes, "train": spec.train_size, "test": spec.test_size,
                     "search_fraction": spec.search_fraction, "available": ok, "where": where,
                     "description": DATASETS.describe()[name]})
    return rows
