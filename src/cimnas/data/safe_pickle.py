"""A restricted unpickler for CIFAR-10's python batches: data, never code.

`pickle.load` calls whatever a file names (`os.system`, `builtins.eval`, ...) while it reads, so a
crafted `data_batch_1` would run code as the user before any check. This unpickler resolves only
the globals a real batch needs to rebuild plain numeric numpy arrays, each through a wrapper that
checks its arguments; every other global is refused. Containers (dict, list, tuple), bytes, str,
ints and floats are built by pickle opcodes and need no global at all.

The globals a real batch uses (pickled by numpy 1.x under Python 2, or by numpy 2 / Python 3):
`numpy.core.multiarray._reconstruct` (numpy 2: `numpy._core.multiarray`), `numpy.ndarray`,
`numpy.dtype`, `numpy.core.numeric._frombuffer` (protocol 5) and `_codecs.encode` (Python 3
protocol 2 writes bytes as `_codecs.encode(str, 'latin1')`).
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# The running numpy's own reconstruction functions (numpy 1.x and 2.x keep them in different modules;
# an array's reduce value names the right one without importing a private module by path).
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]
MAX_PICKLE_BYTES = 1 << 30  # 1 GiB: a CIFAR-10 batch is 31 MB
NUMERIC_KINDS = "biuf"  # bool, signed / unsigned integer, float: all a dataset array may hold


class RefusedPickle(pickle.UnpicklingError):
    """The file names something a data file has no reason to hold (it may be malicious)."""


def _check_dtype(dt: np.dtype, what: str) -> np.dtype:
    if dt.kind not in NUMERIC_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise RefusedPickle(f"{what} has dtype {dt.str!r}; only plain numeric arrays are allowed")
    return dt


def _dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    # numpy 1.x under Python 2 pickled the flags as ints 0 / 1 (the real CIFAR files do), newer as bools
    if not isinstance(obj, str | bytes) or align not in (0, 1) or copy not in (0, 1):
        raise RefusedPickle("a numpy dtype built from something other than a type code")
    code = obj.decode("ascii", "replace") if isinstance(obj, bytes) else obj
    try:
        dt = np.dtype(code)
    except TypeError as e:
        raise RefusedPickle(f"unknown numpy type code {code[:20]!r}") from e
    return _check_dtype(dt, "an array")


def _reconstruct(subtype: Any, shape: Any, dtype_char: Any) -> np.ndarray:
    # numpy always pickles the empty placeholder (0,) 'b' that BUILD then fills from the file's bytes;
    # any other shape would allocate memory that no byte of the file backs
    if subtype is not np.ndarray:
        raise RefusedPickle("an array of a class other than numpy.ndarray")
    if shape != (0,) or dtype_char not in (b"b", "b"):
        raise RefusedPickle("an array placeholder other than numpy's empty (0,) one")
    return _RECONSTRUCT(subtype, shape, dtype_char)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(buf, bytes | bytearray | pickle.PickleBuffer) or not isinstance(dtype, np.dtype):
        raise RefusedPickle("an array rebuilt from something other than bytes")
    return _FROMBUFFER(buf, _check_dtype(dtype, "an array"), shape, order)


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle("a codec call other than str -> latin1 bytes")
    return codecs.encode(text, "latin1")


ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class DataUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` admits only `ALLOWED` (every global, EXT and INST opcode
    goes through it), so loading can build data but never call arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        fn = ALLOWED.get((module, name))
        if fn is None:
            raise RefusedPickle(f"it names {module[:60]}.{name[:60]}")
        return fn


def _check_arrays(obj: Any, depth: int = 0) -> None:
    """Walk the loaded containers: every array must be plain numeric (BUILD states could alter one)."""
    if depth > 8:
        raise RefusedPickle("containers nested deeper than a data file has")
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, "an array")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_arrays(k, depth + 1)
            _check_arrays(v, depth + 1)
    elif isinstance(obj, list | tuple):
        for v in obj:
            if isinstance(v, np.ndarray | dict | list | tuple):
                _check_arrays(v, depth + 1)
    elif not isinstance(obj, str | bytes | int | float | bool | type(None)):
        raise RefusedPickle(f"it holds a {type(obj).__name__} object")


def load_data_pickle(path: Path, encoding: str = "bytes", max_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Unpickle `path` with `DataUnpickler` and check the result holds only data.

    A file over `max_bytes` is refused unread. (A length field inside the file larger than the file
    fails as truncated or as MemoryError; the caller reports both as a damaged file.)

    Raises `RefusedPickle` for anything outside the allowed set and the usual pickle / EOF / value
    errors for damaged files; the caller turns both into a one-line `CimnasError`.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise RefusedPickle(f"the file is {size} bytes, more than the {max_bytes} a data batch may be")
    with open(path, "rb") as f:
        obj = DataUnpickler(f, encoding=encoding).load()
    _check_arrays(obj)
    return obj
