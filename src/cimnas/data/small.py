"""Digits (scikit-learn's bundled 8x8 images, the zero-setup default) and CIFAR-10 (python pickles)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from cimnas.data.base import DATASETS, Augmentation, DatasetSpec, RawData
from cimnas.errors import CimnasError

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the digits test set is the same for every run, like a shipped split


def read_digits(_: Path | None) -> RawData:
    """sklearn `load_digits` (1797 images, values 0..16), split 80/20 with a fixed seeded permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), codes 0..16
    y = torch.from_numpy(d.target.astype(np.int64))
    g = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    perm = torch.randperm(len(y), generator=g)
    n_test = int(round(len(y) * DIGITS_TEST_FRACTION))
    te, tr = perm[:n_test].sort().values, perm[n_test:].sort().values
    return RawData(x[tr], y[tr], x[te], y[te], 16.0)


@DATASETS.register("digits", "scikit-learn 8x8 handwritten digits: 1x8x8, 10 classes, bundled (default)")
def digits() -> DatasetSpec:
    return DatasetSpec(
        name="digits", in_channels=1, image_size=8, num_classes=10, train_size=1438, test_size=359,
        search_fraction=0.2, augmentation=Augmentation(crop_padding_px=1, hflip=False),
        augment_default=False, read=read_digits)


CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_HOW = ("download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it "
              "and pass --data-dir / data.data_dir pointing at cifar-10-batches-py")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: (N, 3, 32, 32) uint8 images, (N,) labels."""
    if not path.is_file():
        raise CimnasError(f"missing data file {path}; {_CIFAR_HOW}")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # truncated or foreign files raise many types
        raise CimnasError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}); re-download it") from e
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise CimnasError(f"{path} lacks the b'data' / b'labels' entries of a CIFAR-10 batch; wrong file")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CimnasError(f"{path}: CIFAR-10 rows must hold 3072 values (3x32x32 images), got shape "
                          f"{tuple(data.shape)}; wrong dataset?")
    if data.shape[0] != labels.shape[0]:
        raise CimnasError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels; the file is corrupt")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def read_cifar10(data_dir: Path | None) -> RawData:
    if data_dir is None:
        raise CimnasError(f"cifar10 needs a data directory; {_CIFAR_HOW}")
    if not data_dir.is_dir():
        raise CimnasError(f"data directory {data_dir} not found; {_CIFAR_HOW}")
    parts = [read_cifar_batch(data_dir / f"data_batch_{i}") for i in range(1, 6)]
    tex, tey = read_cifar_batch(data_dir / "test_batch")
    trx = np.concatenate([p[0] for p in parts])
    try_ = np.concatenate([p[1] for p in parts])
    return RawData(torch.from_numpy(trx), torch.from_numpy(try_), torch.from_numpy(tex),
                   torch.from_numpy(tey), 255.0)


@DATASETS.register("cifar10", "CIFAR-10: 3x32x32 colour, 10 classes, 50k/10k (python pickle batches)")
def cifar10() -> DatasetSpec:
    return DatasetSpec(
        name="cifar10", in_channels=3, image_size=32, num_classes=10, train_size=50000, test_size=10000,
        search_fraction=0.2, augmentation=Augmentation(crop_padding_px=4, hflip=True), augment_default=True,
        read=read_cifar10, how_to_get=_CIFAR_HOW, files=CIFAR_FILES)
