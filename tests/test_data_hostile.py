"""Hostile and damaged dataset files: no code runs, no unbounded decompression, one-line errors."""

from __future__ import annotations

import builtins
import gzip
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cimnas.cli import main
from cimnas.data import load_dataset
from cimnas.data.idx import read_idx
from cimnas.data.imagenet import check_image_folder
from cimnas.data.safe_pickle import RefusedPickle, load_data_pickle
from cimnas.data.small import read_cifar_batch
from cimnas.errors import CimnasError

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------- CIFAR-10 pickles
def real_batch(n: int = 7, seed: int = 0) -> dict:
    """A batch in the layout of cifar-10-batches-py (bytes keys, uint8 rows, list labels)."""
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_batches(d: Path, blob: bytes | None = None, victim: str = "data_batch_2", protocol: int = 2) -> Path:
    """Six valid batches; `victim` replaced by `blob` when given."""
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        (d / name).write_bytes(pickle.dumps(real_batch(seed=i), protocol=protocol))
    if blob is not None:
        (d / victim).write_bytes(blob)
    return d / victim


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_real_format_batch_loads(tmp_path, protocol):
    batch = real_batch()
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = read_cifar_batch(p)
    assert x.dtype == np.uint8 and x.shape == (7, 3, 32, 32) and x.flags.writeable
    assert np.array_equal(x.reshape(7, -1), batch[b"data"]) and y.tolist() == batch[b"labels"]


def py2_batch_bytes(data: np.ndarray, labels: list[int]) -> bytes:
    """The opcodes cPickle (Python 2, protocol 2, numpy 1.x) wrote for cifar-10-batches-py: str -> bytes
    strings, numpy.core.multiarray, and the dtype flags as ints 0 / 1 rather than bools."""
    n, row = data.shape
    raw = data.tobytes()
    return (b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04"
            b"K\x00\x85U\x01b\x87Rq\x05(K\x01M" + n.to_bytes(2, "little") + b"M" + row.to_bytes(2, "little") + b"\x86"
            b"cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            b"\x89T" + len(raw).to_bytes(4, "little") + raw + b"tbU\x06labelsq\x08]q\t("
            + b"".join(b"K" + bytes([v]) for v in labels) + b"eu.")


def test_python2_batch_loads(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (5, 3072)).astype(np.uint8)
    blob = py2_batch_bytes(data, [3, 1, 4, 1, 5])
    assert pickle.loads(blob, encoding="bytes")[b"labels"] == [3, 1, 4, 1, 5]  # the stdlib reads it the same
    p = tmp_path / "data_batch_1"
    p.write_bytes(blob)
    x, y = read_cifar_batch(p)
    assert np.array_equal(x.reshape(5, -1), data) and y.tolist() == [3, 1, 4, 1, 5]


def test_numpy1_and_python3_key_variants_load(tmp_path):
    # numpy 1.x writes numpy.core.multiarray (numpy 2 says numpy._core): both names must resolve
    blob = pickle.dumps(real_batch(), protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in blob
    p = tmp_path / "b"
    p.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert read_cifar_batch(p)[0].shape == (7, 3, 32, 32)
    # a batch re-pickled under Python 3 with str keys and a numpy label array
    b = real_batch()
    p.write_bytes(pickle.dumps({"data": b[b"data"], "labels": np.asarray(b[b"labels"], dtype=np.int32)}))
    assert read_cifar_batch(p)[1].tolist() == b[b"labels"]


def test_full_cifar_set_loads(tmp_path):
    write_batches(tmp_path, protocol=4)
    s = load_dataset("cifar10", data_dir=tmp_path)
    assert len(s.train) == 35 and len(s.test) == 7


class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsEval:
    def __reduce__(self):
        return (builtins.eval, ("open('should_not_exist', 'w')",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_os_system_pickle_does_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = {b"data": RunsShell(marker), b"labels": [0]}
    p = write_batches(tmp_path / "d", pickle.dumps(payload, protocol=protocol))
    with pytest.raises(CimnasError, match=r"data_batch_2 is not a CIFAR-10 batch and was not loaded: .*system"):
        load_dataset("cifar10", data_dir=p.parent)
    assert not marker.exists()


def test_eval_pickle_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": RunsEval(), b"labels": []}))
    with pytest.raises(CimnasError, match=r"builtins\.eval"):
        read_cifar_batch(p)
    assert not (tmp_path / "should_not_exist").exists()


@pytest.mark.parametrize("payload, match", [
    ({b"data": np.array([b"x", 1, None], dtype=object), b"labels": [0, 1, 2]}, "dtype '\\|O'"),
    ({b"data": np.ma.masked_array(np.zeros((1, 3072), np.uint8)), b"labels": [0]}, "numpy.ma"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"extra": set}, r"names (__builtin__|builtins)\.set"),
    ({b"data": np.zeros(3, dtype=[("a", "u1"), ("b", "u1")]), b"labels": [0]}, "dtype"),
])
def test_non_data_objects_refused(tmp_path, payload, match):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CimnasError, match=match) as e:
        read_cifar_batch(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b.pop(b"data"), "lacks the b'data'"),
    (lambda b: b.update({b"data": b[b"data"].astype(np.float32)}), "uint8 numpy array, got float32"),
    (lambda b: b.update({b"data": b[b"data"][:, :100]}), "3072 values"),
    (lambda b: b.update({b"data": b[b"data"].reshape(7, 3, 32, 32)}), "3072 values"),
    (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "7 images but 6 labels"),
    (lambda b: b.update({b"labels": [12] * 7}), r"labels outside 0..9 \(found 12..12\)"),
    (lambda b: b.update({b"labels": [0.5] * 7}), "list of integers"),
    (lambda b: b.update({b"labels": [2**70] * 7}), "list of integers"),
])
def test_wrong_batch_contents(tmp_path, mutate, match):
    b = real_batch()
    mutate(b)
    p = tmp_path / "data_batch_4"
    p.write_bytes(pickle.dumps(b, protocol=2))
    with pytest.raises(CimnasError, match=match):
        read_cifar_batch(p)


def test_truncated_and_foreign_batches(tmp_path):
    p = tmp_path / "data_batch_1"
    good = pickle.dumps(real_batch(), protocol=2)
    for blob in (good[: len(good) // 2], b"", b"\x80\x05garbage", b"plain text, not a pickle"):
        p.write_bytes(blob)
        with pytest.raises(CimnasError, match="data_batch_1 is not a readable CIFAR-10 batch") as e:
            read_cifar_batch(p)
        assert "\n" not in str(e.value)
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CimnasError, match="lacks the b'data'"):
        read_cifar_batch(p)


def test_allocation_tricks_refused(tmp_path):
    p = tmp_path / "data_batch_1"
    # numpy's placeholder is always (0,) 'b'; a 2**31-element one would allocate 2 GiB from a 90-byte file
    p.write_bytes(b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\xff\xff\xff\x7f\x85U\x01b\x87R.")
    with pytest.raises(CimnasError, match="placeholder other than numpy's empty"):
        read_cifar_batch(p)
    # a bytes object declared 1 TiB long inside a 14-byte file: a damaged file, not a crash
    p.write_bytes(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc")
    with pytest.raises(CimnasError, match="is not a readable CIFAR-10 batch"):
        read_cifar_batch(p)
    p.write_bytes(pickle.dumps(real_batch()))
    with pytest.raises(RefusedPickle, match="more than the 1000 a data batch may be"):
        load_data_pickle(p, max_bytes=1000)


# ---------------------------------------------------------------- IDX files
def idx_bytes(arr: np.ndarray) -> bytes:
    return idx_header(arr.shape) + arr.astype(np.uint8).tobytes()


def idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(int(d).to_bytes(4, "big") for d in shape)


def write_mnist(d: Path, n_train: int = 12, n_test: int = 6, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test)]
    d.mkdir(parents=True, exist_ok=True)
    for stem, a in zip(IDX_STEMS, arrays, strict=True):
        data = idx_bytes(a)
        (d / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)


def test_gzip_bomb_stops_at_declared_size(tmp_path):
    # header says 10 images of 28x28 (7840 bytes); the body is 50 MB of zeros (~50 KB on disk)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(idx_header((10, 28, 28)))
        zeros = bytes(1 << 20)
        for _ in range(50):
            f.write(zeros)
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(CimnasError, match="decompresses to more than the 7840 bytes its header declares"):
            read_idx(bomb, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # a full decompress would hold 50 MB


def test_gzip_header_larger_than_file_can_hold(tmp_path):
    # a plausible-looking header declaring 1.5 GB inside a 100-byte gzip file: refused before allocating
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_header((2_000_000, 28, 28)) + bytes(50)))
    with pytest.raises(CimnasError, match="more than a gzip file of .* bytes can expand to"):
        read_idx(p, 3)


@pytest.mark.parametrize("gz", [False, True])
def test_header_dims_overflow(tmp_path, gz):
    big = 2**32 - 1  # (2**32 - 1)**3 wraps around in int64; must be caught, not reshaped
    blob = idx_header((big, big, big)) + bytes(100)
    p = tmp_path / ("x.gz" if gz else "x")
    p.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(CimnasError, match=f"declares shape {big}x{big}x{big}"):
        read_idx(p, 3)


def test_corrupt_gzip_body(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((4, 28, 28))))
    bad = bytearray(good)
    bad[10] = 0xFF  # first deflate byte: block type 3 does not exist
    with pytest.raises(Exception) as raw:  # precondition: the stdlib raises zlib.error for this body
        gzip.decompress(bytes(bad))
    assert type(raw.value).__name__ == "error"
    p = tmp_path / "x.gz"
    p.write_bytes(bytes(bad))
    with pytest.raises(CimnasError, match="compressed body is damaged .*error") as e:
        read_idx(p, 3)
    assert "\n" not in str(e.value)
    p.write_bytes(good[:-12])  # cut inside the stream: EOFError
    with pytest.raises(CimnasError, match="x.gz (is truncated|is not a valid gzip)"):
        read_idx(p, 3)
    crc = bytearray(good)
    crc[-8] ^= 0xFF  # damaged CRC trailer
    p.write_bytes(bytes(crc))
    with pytest.raises(CimnasError, match="x.gz is not a valid gzip file"):
        read_idx(p, 3)


def test_plain_idx_headers_and_bodies(tmp_path):
    p = tmp_path / "x"
    cases = [
        (b"", "truncated \\(no IDX header\\)"),
        (gzip.compress(idx_header((1, 28, 28)) + bytes(784)), "is gzip-compressed; name it x.gz"),
        (b"\x00\x00\x0d\x03" + bytes(12), "0x0d is not unsigned byte"),
        (idx_header((2, 28)) + bytes(56), "has 2 dimensions, expected 3"),
        (idx_header((2, 28, 28)) + bytes(100), "x is truncated: expected 1568 data bytes"),
        (idx_header((2, 28, 28)) + bytes(1569), "longer than its header says"),
        (idx_header((2, 28, 28))[:9], "header incomplete"),
    ]
    for blob, match in cases:
        p.write_bytes(blob)
        with pytest.raises(CimnasError, match=match):
            read_idx(p, 3)


def test_idx_pairs_must_match(tmp_path):
    write_mnist(tmp_path, gz=False)
    lab = tmp_path / "train-labels-idx1-ubyte"
    lab.write_bytes(idx_bytes(np.zeros(11)))
    with pytest.raises(CimnasError, match="train-images-idx3-ubyte holds 12 images but .*train-labels-idx1-ubyte "
                                          "holds 11 labels"):
        load_dataset("mnist", data_dir=tmp_path)
    lab.write_bytes(idx_bytes(np.full(12, 10)))
    with pytest.raises(CimnasError, match="train-labels-idx1-ubyte: label 10 is outside 0..9"):
        load_dataset("mnist", data_dir=tmp_path)
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((6, 20, 20))))
    with pytest.raises(CimnasError, match="t10k-images-idx3-ubyte: mnist images must be 1x28x28, got 1x20x20"):
        load_dataset("mnist", data_dir=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_header((0, 28, 28)))
    with pytest.raises(CimnasError, match="holds no images"):
        load_dataset("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------- ImageNet folders
def test_image_folder_checks(tmp_path):
    root = tmp_path / "train"
    with pytest.raises(CimnasError, match="missing folder"):
        check_image_folder(root)
    root.mkdir()
    (root / "README.txt").write_text("no classes here")
    with pytest.raises(CimnasError, match="has no class folders"):
        check_image_folder(root)
    (root / "n01440764").mkdir()
    (root / "n01440764" / "a.JPEG").write_bytes(b"")
    (root / "n01443537").mkdir()
    (root / "n01443537" / "notes.txt").write_text("x")
    with pytest.raises(CimnasError, match="n01443537 holds no images"):
        check_image_folder(root)
    (root / "n01443537" / "b.png").write_bytes(b"")
    assert check_image_folder(root) == ["n01440764", "n01443537"]


# ---------------------------------------------------------------- through the CLI
def run_cli(capsys, args: list[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("kind", ["cifar_shell", "mnist_bomb", "cifar_truncated"])
def test_cli_one_line_error(tmp_path, capsys, kind):
    marker = tmp_path / "pwned"
    data = tmp_path / "data"
    if kind == "cifar_shell":
        write_batches(data, pickle.dumps({b"data": RunsShell(marker), b"labels": [0]}))
        name = "cifar10"
    elif kind == "cifar_truncated":
        write_batches(data, pickle.dumps(real_batch(), protocol=2)[:500], victim="test_batch")
        name = "cifar10"
    else:
        write_mnist(data)
        with gzip.open(data / "t10k-images-idx3-ubyte.gz", "wb") as f:
            f.write(idx_header((6, 28, 28)) + bytes(20 << 20))
        name = "mnist"
    code, err = run_cli(capsys, ["train", "--set", f"data.name={name}", "--set", f"data.data_dir={data}",
                                 "--set", "train.epochs=1", "--out", str(tmp_path / "run")])
    assert code == 2 and err.count("\n") == 1 and err.startswith("cimnas: error: ")
    assert "Traceback" not in err and str(data) in err
    assert not marker.exists()
