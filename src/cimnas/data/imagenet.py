"""ImageNet (ILSVRC-2012) from a folder of class folders: `DIR/train/<class>/*.JPEG`, `DIR/val/<class>/...`.

Too large for memory, so it is read lazily with torchvision's ImageFolder (optional extra:
`pip install cimnas[imagenet]`). `FolderSplit` has the same interface as `DataSplit`. Standard
augmentation: RandomResizedCrop + horizontal flip for training; Resize(256/224 x size) +
CenterCrop for evaluation. Batch order comes from the caller's torch.Generator; workers are
seeded from it through the DataLoader's own generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cimnas.data.base import DATASETS, DatasetSpec, RawData, Splits, one_line, seeded_permutation
from cimnas.errors import CimnasError

_HOW = ("pass --data-dir / data.data_dir pointing at a folder with train/ and val/ subfolders, "
        "each holding one folder of images per class")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def check_image_folder(root: Path) -> list[str]:
    """The class folder names under `root`, after checking each holds at least one image file.

    Done with pathlib before torchvision's ImageFolder (which raises multi-line errors), stopping at
    the first image of each class, so it stays cheap on the 1000 ILSVRC folders.
    """
    if not root.is_dir():
        raise CimnasError(f"missing folder {root}; {_HOW}")
    try:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())  # ImageFolder's rule, hidden included
        if not classes:
            raise CimnasError(f"{root} has no class folders (expected {root}/<class>/<image>.JPEG); {_HOW}")
        for name in classes:
            if not any(f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() for f in (root / name).iterdir()):
                raise CimnasError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                  "add its images or remove the folder")
    except OSError as e:
        raise CimnasError(f"cannot list the image folders under {root} ({one_line(e)}); check its permissions") from e
    return classes


def _torchvision() -> Any:
    try:  # lazy: optional extra cimnas[imagenet]
        import torchvision  # noqa: F401
        from torchvision import datasets, transforms
    except ImportError as e:
        raise CimnasError("the imagenet dataset needs torchvision; install it with "
                          "`pip install cimnas[imagenet]`") from e
    return datasets, transforms


class FolderSplit:
    """A lazily read image-folder split (subset of an ImageFolder) with DataSplit's interface."""

    def __init__(self, folder: Any, train_tf: Any, eval_tf: Any, indices: torch.Tensor,
                 augment: bool, num_workers: int = 4, device: str | torch.device = "cpu"):
        self.folder, self.train_tf, self.eval_tf = folder, train_tf, eval_tf
        self.indices = indices
        self.augment_enabled = augment
        self.num_workers = num_workers
        self._device = torch.device(device)

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def device(self) -> torch.device:
        return self._device

    def subset(self, positions: torch.Tensor) -> FolderSplit:
        return FolderSplit(self.folder, self.train_tf, self.eval_tf, self.indices[positions],
                           self.augment_enabled, self.num_workers, self._device)

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices[torch.randperm(len(self), generator=generator)] if shuffle else self.indices
        tf = self.train_tf if (augment and self.augment_enabled) else self.eval_tf
        ds = _Transformed(self.folder, order.tolist(), tf)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else 0
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(seed), pin_memory=self._device.type == "cuda")
        for x, y in loader:
            yield x.to(self._device, non_blocking=True), y.to(self._device, non_blocking=True)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, folder: Any, order: list[int], tf: Any):
        self.folder, self.order, self.tf = folder, order, tf

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.folder.samples[self.order[i]]
        return self.tf(self.folder.loader(path)), label


def load_imagenet(spec: DatasetSpec, data_dir: Path | None, *, seed: int, search_fraction: float,
                  limit: int | None, test_limit: int | None, augment: bool,
                  device: str | torch.device, image_size: int | None) -> Splits:
    datasets, T = _torchvision()
    if data_dir is None:
        raise CimnasError(f"imagenet needs a data directory; {_HOW}")
    train_classes, val_classes = check_image_folder(data_dir / "train"), check_image_folder(data_dir / "val")
    if train_classes != val_classes:
        raise CimnasError(f"{data_dir}: train/ has {len(train_classes)} class folders, val/ has "
                          f"{len(val_classes)} with different names; they must match")
    size = image_size or spec.image_size
    if size < 32:
        raise CimnasError(f"imagenet image_size must be >= 32, got {size}")
    try:
        train_f = datasets.ImageFolder(str(data_dir / "train"))
        val_f = datasets.ImageFolder(str(data_dir / "val"))
    except (FileNotFoundError, RuntimeError, OSError) as e:
        raise CimnasError(f"cannot read image folders under {data_dir}: {one_line(e)}") from e
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor()])
    eval_tf = T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), T.ToTensor()])

    def idx(n: int, lim: int | None, label: str) -> torch.Tensor:
        if lim is not None and lim < n:
            return seeded_permutation(n, seed, label)[:lim].sort().values
        return torch.arange(n)

    train = FolderSplit(train_f, train_tf, eval_tf, idx(len(train_f), limit, "limit-train"), augment,
                        device=device)
    test = FolderSplit(val_f, train_tf, eval_tf, idx(len(val_f), test_limit or limit, "limit-test"), False,
                       device=device)
    n_eval = int(round(len(train) * search_fraction))
    if n_eval < 1 or n_eval >= len(train):
        raise CimnasError(f"search_fraction {search_fraction} leaves an empty search split")
    perm = seeded_permutation(len(train), seed, "search-split")
    search_eval = train.subset(perm[:n_eval].sort().values)
    search_eval.augment_enabled = False
    return Splits("imagenet", train, train.subset(perm[n_eval:].sort().values), search_eval, test,
                  len(train_f.classes), 3, size)


def _not_in_memory(_: Path | None) -> RawData:
    raise CimnasError("imagenet is read lazily; use cimnas.data.load_dataset")


@DATASETS.register("imagenet", "ImageNet: 3x224x224 colour, 1000 classes, class folders (needs torchvision)")
def imagenet() -> DatasetSpec:
    return DatasetSpec(
        name="imagenet", in_channels=3, image_size=224, num_classes=1000, train_size=1281167,
        test_size=50000, search_fraction=0.1, augmentation=None, augment_default=True,
        read=_not_in_memory, how_to_get=_HOW, files=("train", "val"), lazy_loader=load_imagenet,
        requires="torchvision")
