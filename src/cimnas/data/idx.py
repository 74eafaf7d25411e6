"""MNIST and Fashion-MNIST from IDX files (`.gz` or plain), parsed with numpy.frombuffer.

IDX format (LeCun): 2 zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
then one big-endian uint32 per dimension, then the data. Images are idx3 (N, 28, 28), labels idx1.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from cimnas.data.base import DATASETS, Augmentation, DatasetSpec, RawData
from cimnas.errors import CimnasError

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_file(data_dir: Path, stem: str, how_to_get: str) -> Path:
    """`stem` or `stem.gz` inside `data_dir` (also the torchvision style `stem` with '.' before idx)."""
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = data_dir / cand
        if p.is_file():
            return p
    raise CimnasError(f"missing data file {data_dir / stem}[.gz]; {how_to_get}")


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes into an array of `expected_ndim` dimensions."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise CimnasError(f"{path} is not a valid gzip file ({e}); re-download it") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CimnasError(f"{path} is not an IDX file (bad magic number); re-download it")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise CimnasError(f"{path}: IDX data type 0x{dtype_code:02x} is not unsigned byte (0x08); "
                          "wrong file, re-download it")
    if ndim != expected_ndim:
        raise CimnasError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim} "
                          "(images and labels swapped?)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CimnasError(f"{path} is truncated (header incomplete); re-download it")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(dims))
    if len(raw) - header < size:
        raise CimnasError(f"{path} is truncated: expected {size} data bytes for shape {dims}, found "
                          f"{len(raw) - header}; re-download it")
    if len(raw) - header > size:
        raise CimnasError(f"{path} has {len(raw) - header - size} trailing bytes after shape {dims}; "
                          "the file is corrupt, re-download it")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(dims)


def read_idx_dataset(data_dir: Path | None, how_to_get: str) -> RawData:
    """The four standard IDX files of an MNIST-style dataset as uint8 tensors (N, 1, H, W)."""
    if data_dir is None:
        raise CimnasError(f"no data directory given; {how_to_get}")
    if not data_dir.is_dir():
        raise CimnasError(f"data directory {data_dir} not found; {how_to_get}")
    arrays = []
    for stem in IDX_FILES:
        path = find_file(data_dir, stem, how_to_get)
        arrays.append(read_idx(path, 3 if "images" in stem else 1))
    trx, try_, tex, tey = arrays

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy()).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return RawData(images(trx), labels(try_), images(tex), labels(tey), 255.0)


_FASHION_HOW = (f"install the Debian package with `apt-get install dataset-fashion-mnist` (files land in "
                f"{FASHION_DIR}) or pass --data-dir / data.data_dir pointing at the four IDX files")
_MNIST_HOW = ("download the four IDX files (train-images-idx3-ubyte.gz, ...) from "
              "http://yann.lecun.com/exdb/mnist/ and pass --data-dir / data.data_dir")


@DATASETS.register("fashion-mnist", "Fashion-MNIST: 1x28x28 grey, 10 classes, 60k/10k (IDX files)")
def fashion_mnist() -> DatasetSpec:
    return DatasetSpec(
        name="fashion-mnist", in_channels=1, image_size=28, num_classes=10, train_size=60000,
        test_size=10000, search_fraction=0.2, augmentation=Augmentation(crop_padding_px=2, hflip=True),
        augment_default=False, read=lambda d: read_idx_dataset(d, _FASHION_HOW), default_dir=FASHION_DIR,
        how_to_get=_FASHION_HOW, files=IDX_FILES)


@DATASETS.register("mnist", "MNIST handwritten digits: 1x28x28 grey, 10 classes, 60k/10k (IDX files)")
def mnist() -> DatasetSpec:
    return DatasetSpec(
        name="mnist", in_channels=1, image_size=28, num_classes=10, train_size=60000, test_size=10000,
        search_fraction=0.2, augmentation=Augmentation(crop_padding_px=2, hflip=False),
        augment_default=False, read=lambda d: read_idx_dataset(d, _MNIST_HOW), default_dir=None, how_to_get=_MNIST_HOW,
        files=IDX_FILES)
