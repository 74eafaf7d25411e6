"""MNIST and Fashion-MNIST from IDX files (`.gz` or plain), parsed with numpy.frombuffer.

IDX format (LeCun): 2 zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
then one big-endian uint32 per dimension, then the data. Images are idx3 (N, 28, 28), labels idx1.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from cimnas.data.base import DATASETS, Augmentation, DatasetSpec, RawData, one_line
from cimnas.errors import CimnasError

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MAX_IDX_BYTES = 1 << 31  # 2 GiB: 35x the MNIST training images; a larger header is corrupt or hostile
DEFLATE_MAX_RATIO = 1032  # deflate expands at most ~1032:1, so a gzip file cannot hold more than this


def find_file(data_dir: Path, stem: str, how_to_get: str) -> Path:
    """`stem` or `stem.gz` inside `data_dir` (also the torchvision style `stem` with '.' before idx)."""
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = data_dir / cand
        if p.is_file():
            return p
    raise CimnasError(f"missing data file {data_dir / stem}[.gz]; {how_to_get}")


def read_idx(path: Path, expected_ndim: int, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file of unsigned bytes into an array of `expected_ndim` dimensions.

    The file is streamed, so no more than the header's declared size is ever decompressed: a `.gz`
    whose body is longer than its header says (a decompression bomb) is refused after
    `prod(dims) + 1` bytes. Damaged gzip streams, impossible headers and truncated or overlong
    bodies are one-line `CimnasError`s naming the file.
    """
    gz = path.suffix == ".gz"
    try:
        size_on_disk = path.stat().st_size
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            return _parse_idx(f, path, expected_ndim, size_on_disk, gz, max_bytes)
    except (OSError, EOFError, zlib.error) as e:
        what = "is not a valid gzip file or its compressed body is damaged" if gz else "cannot be read"
        raise CimnasError(f"{path} {what} ({type(e).__name__}: {one_line(e)}); re-download it") from e


def _parse_idx(f: BinaryIO, path: Path, expected_ndim: int, size_on_disk: int, gz: bool,
               max_bytes: int) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise CimnasError(f"{path} is truncated (no IDX header); re-download it")
    if head[:2] == b"\x1f\x8b" and not gz:
        raise CimnasError(f"{path} is gzip-compressed; name it {path.name}.gz (or gunzip it)")
    if head[0] != 0 or head[1] != 0:
        raise CimnasError(f"{path} is not an IDX file (bad magic number); re-download it")
    dtype_code, ndim = head[2], head[3]
    if dtype_code != 0x08:
        raise CimnasError(f"{path}: IDX data type 0x{dtype_code:02x} is not unsigned byte (0x08); "
                          "wrong file, re-download it")
    if ndim != expected_ndim:
        raise CimnasError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim} "
                          "(images and labels swapped?)")
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise CimnasError(f"{path} is truncated (header incomplete); re-download it")
    dims = tuple(int.from_bytes(raw_dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    size = math.prod(dims)  # Python ints: (2**32 - 1)**3 does not wrap around as int64 would
    shape = "x".join(map(str, dims))
    if size > max_bytes:
        raise CimnasError(f"{path}: header declares shape {shape} ({size} bytes), more than the {max_bytes} "
                          "an IDX dataset file may hold; the header is corrupt, re-download it")
    header = 4 + 4 * ndim
    if not gz and size_on_disk - header != size:
        state = "truncated" if size_on_disk - header < size else "longer than its header says"
        raise CimnasError(f"{path} is {state}: expected {size} data bytes for shape {shape}, found "
                          f"{size_on_disk - header}; re-download it")
    if gz and size > DEFLATE_MAX_RATIO * size_on_disk:
        raise CimnasError(f"{path} is truncated: shape {shape} needs {size} bytes, more than a gzip file of "
                          f"{size_on_disk} bytes can expand to; re-download it")
    body = bytearray(size)
    got = _read_into(f, body)
    if got < size:
        raise CimnasError(f"{path} is truncated: expected {size} data bytes for shape {shape}, found {got}; "
                          "re-download it")
    if f.read(1):
        raise CimnasError(f"{path} decompresses to more than the {size} bytes its header declares (shape "
                          f"{shape}); the file is corrupt or a decompression bomb, re-download it")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_into(f: BinaryIO, buf: bytearray) -> int:
    """Fill `buf` from `f` (several reads if the stream returns short ones); bytes read."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _check_pair(images: tuple[Path, np.ndarray], labels: tuple[Path, np.ndarray], image_size: int,
                num_classes: int, dataset: str) -> None:
    """An image file and its label file belong together: 1xHxW items, equal counts, labels in range."""
    (ip, x), (lp, y) = images, labels
    if tuple(x.shape[1:]) != (image_size, image_size):
        raise CimnasError(f"{ip}: {dataset} images must be 1x{image_size}x{image_size}, got "
                          f"1x{'x'.join(map(str, x.shape[1:]))}; point --data-dir at the real {dataset} files")
    if x.shape[0] < 1:
        raise CimnasError(f"{ip} holds no images; re-download it")
    if x.shape[0] != y.shape[0]:
        raise CimnasError(f"{ip} holds {x.shape[0]} images but {lp} holds {y.shape[0]} labels; the files do "
                          "not belong together, re-download them")
    if int(y.max()) >= num_classes:
        raise CimnasError(f"{lp}: label {int(y.max())} is outside 0..{num_classes - 1}; the label file is "
                          "corrupt, re-download it")


def read_idx_dataset(data_dir: Path | None, how_to_get: str, dataset: str = "mnist", image_size: int = 28,
                     num_classes: int = 10) -> RawData:
    """The four standard IDX files of an MNIST-style dataset as uint8 tensors (N, 1, H, W)."""
    if data_dir is None:
        raise CimnasError(f"no data directory given; {how_to_get}")
    if not data_dir.is_dir():
        raise CimnasError(f"data directory {data_dir} not found; {how_to_get}")
    read = []
    for stem in IDX_FILES:
        path = find_file(data_dir, stem, how_to_get)
        read.append((path, read_idx(path, 3 if "images" in stem else 1)))
    _check_pair(read[0], read[1], image_size, num_classes, dataset)
    _check_pair(read[2], read[3], image_size, num_classes, dataset)
    (_, trx), (_, try_), (_, tex), (_, tey) = read

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).unsqueeze(1)  # `a` owns a writable bytearray: no copy needed

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
        augment_default=False, read=lambda d: read_idx_dataset(d, _FASHION_HOW, "fashion-mnist"),
        default_dir=FASHION_DIR, how_to_get=_FASHION_HOW, files=IDX_FILES)


@DATASETS.register("mnist", "MNIST handwritten digits: 1x28x28 grey, 10 classes, 60k/10k (IDX files)")
def mnist() -> DatasetSpec:
    return DatasetSpec(
        name="mnist", in_channels=1, image_size=28, num_classes=10, train_size=60000, test_size=10000,
        search_fraction=0.2, augmentation=Augmentation(crop_padding_px=2, hflip=False),
        augment_default=False, read=lambda d: read_idx_dataset(d, _MNIST_HOW), default_dir=None, how_to_get=_MNIST_HOW,
        files=IDX_FILES)
