"""Digits (scikit-learn's bundled 8x8 images, the zero-setup default) and CIFAR-10 (python pickles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cimnas.data.base import DATASETS, Augmentation, DatasetSpec, RawData, one_line
from cimnas.data.safe_pickle import RefusedPickle, load_data_pickle
from cimnas.errors import CimnasError

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the digits test set is the same for every run, like a shipped split


def read_digits(_: Path | None) -> RawData:
    """sklearn `load_digits` (1797 images, values 0..16), split 80/20 with a fixed seeded permutation."""
    from sklearn.datasets import load_digits  # lazy: sklearn.datasets costs 2.5-2.9 s to import, digits only

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
_CIFAR_GET = "get the batches from https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR_ROW = 3 * 32 * 32
CIFAR_CLASSES = 10


def _entry(d: dict, key: str) -> object:
    """d[b'key'] (Python 2 pickles read as bytes) or d['key'] (batches re-pickled under Python 3)."""
    return d[key.encode()] if key.encode() in d else d.get(key)


def _labels(path: Path, raw: object) -> np.ndarray:
    """b'labels' as int64: a list of Python ints (the real format) or an integer numpy array."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    if isinstance(raw, list) and all(type(v) is int for v in raw):
        try:
            return np.asarray(raw, dtype=np.int64)
        except OverflowError:
            pass
    raise CimnasError(f"{path}: b'labels' must be a list of integers; the file is corrupt, re-download it")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: (N, 3, 32, 32) uint8 images, (N,) labels.

    Read with the restricted `DataUnpickler` (numbers and numpy arrays only, never code), then
    checked: a dict with a uint8 (N, 3072) b'data' array and N labels in 0..9.
    """
    if not path.is_file():
        raise CimnasError(f"missing data file {path}; {_CIFAR_HOW}")
    try:
        d = load_data_pickle(path)
    except RefusedPickle as e:
        raise CimnasError(f"{path} is not a CIFAR-10 batch and was not loaded: {one_line(e)}; a real batch "
                          f"holds only numpy arrays and lists, so do not use this file ({_CIFAR_GET})") from e
    except Exception as e:  # truncated or foreign files raise many types (EOFError, UnpicklingError, ...)
        detail = type(e).__name__ if one_line(e) == type(e).__name__ else f"{type(e).__name__}: {one_line(e)}"
        raise CimnasError(f"{path} is not a readable CIFAR-10 batch ({detail}); re-download it ({_CIFAR_GET})") from e
    if not isinstance(d, dict) or _entry(d, "data") is None or _entry(d, "labels") is None:
        raise CimnasError(f"{path} lacks the b'data' / b'labels' entries of a CIFAR-10 batch; wrong file "
                          f"({_CIFAR_GET})")
    data, raw_labels = _entry(d, "data"), _entry(d, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise CimnasError(f"{path}: b'data' must be a uint8 numpy array, got {kind}; wrong file, re-download it")
    if data.ndim != 2 or data.shape[1] != CIFAR_ROW or data.shape[0] < 1:
        raise CimnasError(f"{path}: CIFAR-10 rows must hold 3072 values (3x32x32 images), got shape "
                          f"{tuple(data.shape)}; wrong dataset?")
    labels = _labels(path, raw_labels)
    if labels.ndim != 1 or data.shape[0] != labels.shape[0]:
        raise CimnasError(f"{path}: {data.shape[0]} images but {labels.size} labels; the file is corrupt, "
                          "re-download it")
    if int(labels.min()) < 0 or int(labels.max()) >= CIFAR_CLASSES:
        raise CimnasError(f"{path}: labels outside 0..{CIFAR_CLASSES - 1} (found {int(labels.min())}.."
                          f"{int(labels.max())}); the file is corrupt, re-download it")
    images = data.reshape(-1, 3, 32, 32)
    return (images if images.flags.writeable else images.copy()), labels


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
