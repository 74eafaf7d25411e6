"""Datasets: IDX / CIFAR readers on files made here, splits, batching, augmentation, bad input."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cimnas.data import DATASETS, Augmentation, DataSplit, dataset_table, load_dataset
from cimnas.data.idx import FASHION_DIR, read_idx
from cimnas.errors import CimnasError


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(d: Path, n_train: int = 40, n_test: int = 20, gz: bool = True, size: int = 28) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    d.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        data = idx_bytes(a)
        if gz:
            (d / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (d / stem).write_bytes(data)
    return arrays


def write_cifar(d: Path, per_batch: int = 6, n_test: int = 5, row_len: int = 3072) -> None:
    rng = np.random.default_rng(1)
    d.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        payload = {b"data": rng.integers(0, 256, (n, row_len)).astype(np.uint8),
                   b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}
        with open(d / name, "wb") as f:
            pickle.dump(payload, f)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    s = load_dataset("mnist", data_dir=tmp_path, seed=3)
    x, y = s.train.tensors()
    assert x.shape == (40, 1, 28, 28)
    # exact values: codes / 255, in file order
    assert torch.equal(x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"] / 255.0).float())
    assert torch.equal(y, torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long())
    assert len(s.test) == 20 and s.num_classes == 10 and s.in_channels == 1 and s.image_size == 28


def test_idx_corrupt_files(tmp_path):
    write_idx_set(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    good = p.read_bytes()
    p.write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(CimnasError, match="magic number"):
        load_dataset("mnist", data_dir=tmp_path)
    p.write_bytes(good[:-100])
    with pytest.raises(CimnasError, match="truncated"):
        load_dataset("mnist", data_dir=tmp_path)
    p.write_bytes(good[:10])
    with pytest.raises(CimnasError, match="truncated"):
        read_idx(p, 3)
    p.write_bytes(b"not gzip")
    p.rename(tmp_path / "x.gz")
    with pytest.raises(CimnasError, match="gzip"):
        read_idx(tmp_path / "x.gz", 3)


def test_idx_wrong_size_and_missing(tmp_path):
    write_idx_set(tmp_path / "small", size=16)
    with pytest.raises(CimnasError, match="1x28x28"):
        load_dataset("mnist", data_dir=tmp_path / "small")
    write_idx_set(tmp_path / "miss")
    (tmp_path / "miss" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(CimnasError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path / "miss")
    with pytest.raises(CimnasError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(CimnasError, match="data-dir"):
        load_dataset("mnist")


def test_cifar_pickles(tmp_path):
    write_cifar(tmp_path)
    s = load_dataset("cifar10", data_dir=tmp_path, search_fraction=0.2)
    assert len(s.train) == 30 and len(s.test) == 5 and s.in_channels == 3 and s.image_size == 32
    with open(tmp_path / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    x, _ = s.train.tensors()
    # row-major 3072 = 3 x 32 x 32 (channel planes first)
    assert torch.equal(x[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32) / 255.0).float())
    assert s.train.augmentation == Augmentation(4, True) and s.test.augmentation is None


def test_cifar_bad_input(tmp_path):
    write_cifar(tmp_path / "a", row_len=100)
    with pytest.raises(CimnasError, match="3072"):
        load_dataset("cifar10", data_dir=tmp_path / "a")
    write_cifar(tmp_path / "b")
    (tmp_path / "b" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CimnasError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path / "b")
    (tmp_path / "b" / "data_batch_3").unlink()
    with pytest.raises(CimnasError, match="missing data file .*data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path / "b")


def test_unknown_dataset_lists_valid():
    with pytest.raises(CimnasError, match="digits.*fashion-mnist"):
        load_dataset("svhn")


def test_digits_splits_partition_and_seed():
    a = load_dataset("digits", seed=1)
    b = load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    assert len(a.train) + len(a.test) == 1797
    st, se = set(a.search_train.indices.tolist()), set(a.search_eval.indices.tolist())
    assert not st & se and st | se == set(a.train.indices.tolist())
    assert len(se) == round(0.2 * len(a.train))
    assert torch.equal(a.search_eval.indices, b.search_eval.indices)
    assert not torch.equal(a.search_eval.indices, c.search_eval.indices)
    x, _ = a.train.tensors()
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0  # 16 / 16


def test_limit_and_batches_cover_each_sample_once():
    s = load_dataset("digits", limit=100, test_limit=50, search_fraction=0.3)
    assert len(s.train) == 100 and len(s.test) == 50 and len(s.search_eval) == 30
    g = torch.Generator().manual_seed(0)
    ys, xs = [], []
    for x, y in s.train.batches(32, shuffle=True, generator=g):
        assert x.dtype == torch.float32 and y.dtype == torch.long
        xs.append(x)
        ys.append(y)
    assert [len(y) for y in ys] == [32, 32, 32, 4]
    allx = torch.cat(xs)
    ref, refy = s.train.tensors()
    # a permutation of the split: same multiset of (image, label) rows
    key = lambda a, b: sorted(map(tuple, torch.cat([a.flatten(1), b[:, None].float()], 1).tolist()))  # noqa: E731
    assert key(allx, torch.cat(ys)) == key(ref, refy)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(s.train.batches(16, True, g1), s.train.batches(16, True, g2),
                                                       strict=True))


def test_augmentation_crop_and_flip_by_hand():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    flip = Augmentation(crop_padding_px=0, hflip=True)
    g = torch.Generator().manual_seed(0)
    out = flip.apply(x, g)
    for i in range(2):  # every image is either unchanged or mirrored
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    crop = Augmentation(crop_padding_px=1, hflip=False)
    # many draws: every output is a shifted copy with zero fill, and shifts vary
    seen = set()
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        out = crop.apply(x, g)
        for i in range(2):
            padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
            match = [(dy, dx) for dy in range(3) for dx in range(3)
                     if torch.equal(out[i], padded[:, dy:dy + 4, dx:dx + 4])]
            assert match
            seen.add(match[0])
    assert len(seen) >= 5


def test_augment_only_in_train_batches():
    s = load_dataset("digits", augment=True, limit=64)
    assert s.train.augmentation is not None and s.search_eval.augmentation is None
    g = torch.Generator().manual_seed(0)
    plain = torch.cat([x for x, _ in s.train.batches(64, augment=False)])
    aug = torch.cat([x for x, _ in s.train.batches(64, augment=True, generator=g)])
    assert not torch.equal(plain, aug)
    assert abs(float(plain.sum()) - float(aug.sum())) < float(plain.sum())  # crops keep most ink


def test_datasplit_rejects_bad_batch_size():
    s = DataSplit(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), 255.0)
    with pytest.raises(CimnasError):
        next(s.batches(0))


def test_dataset_table_lists_all():
    rows = {r["name"]: r for r in dataset_table()}
    assert set(rows) == set(DATASETS.names()) >= {"digits", "mnist", "fashion-mnist", "cifar10", "imagenet"}
    assert rows["digits"]["available"] and rows["digits"]["shape"] == [1, 8, 8]
    assert rows["imagenet"]["classes"] == 1000


def test_imagenet_needs_torchvision_or_dir(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(CimnasError, match=r"pip install cimnas\[imagenet\]"):
            load_dataset("imagenet", data_dir=tmp_path)
    else:
        with pytest.raises(CimnasError, match="train"):
            load_dataset("imagenet", data_dir=tmp_path)


@pytest.mark.skipif(not Path(FASHION_DIR).is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_found_automatically():
    s = load_dataset("fashion-mnist", limit=500, test_limit=200)
    assert len(s.train) == 500 and len(s.test) == 200
    assert len(s.train.labels) == 60000 and len(s.test.labels) == 10000
    counts = torch.bincount(s.train.labels, minlength=10)
    assert torch.all(counts == 6000)  # Fashion-MNIST is balanced
