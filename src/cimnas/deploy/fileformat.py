"""The export format: `model.json` (graph, crossbar spec, array table) + `arrays.npz` (integer arrays).

A contract (docs/export-format.md): a format name and version; every array listed in the JSON with its
dtype, shape and SHA-256; a loader that checks the version, each op's fields and the shapes they imply, and
every array's dtype, shape and hash against that schema before anything uses it; no pickle (`np.load(...,
allow_pickle=False)`). Writing is byte-reproducible: arrays in sorted order, fixed zip timestamps and
attributes, JSON with sorted keys, so the same checkpoint exports to the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cimnas.errors import CimnasError, check
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.utils.io import atomic_write_bytes, read_json

FORMAT = "cimnas-export"
VERSION = 1
JSON_NAME, NPZ_NAME = "model.json", "arrays.npz"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
OPS = ("encode", "crossbar", "compare", "requant", "add", "stream_code", "levels", "maxpool", "logits")


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (zip of .npy members) with sorted members, fixed timestamps and no pickled objects."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=6)
    return buf.getvalue()


def make_doc(meta: dict, ops: list[dict], arrays: dict[str, np.ndarray]) -> dict:
    """The model.json document of an export, validated (the writer obeys the schema the reader checks)."""
    table = {n: {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": sha256(a)} for n, a in arrays.items()}
    doc = {"format": FORMAT, "version": VERSION, **meta, "ops": ops, "arrays": table}
    validate(doc)
    return doc


def write_export(folder: str | Path, doc: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write model.json (`make_doc`) + arrays.npz into `folder` (atomically, file by file)."""
    folder = Path(folder)
    atomic_write_bytes(folder / NPZ_NAME, npz_bytes(arrays))
    atomic_write_bytes(folder / JSON_NAME, (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode())


# ---------------------------------------------------------------- schema
def _ints(op: dict, *keys: str) -> None:
    for k in keys:
        v = op.get(k)
        check(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              f"op {op.get('name')!r}: field {k!r} must be a non-negative integer, got {v!r}")


def _shape(op: dict, key: str) -> tuple[int, ...]:
    v = op.get(key)
    check(isinstance(v, list) and 1 <= len(v) <= 3 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                            for x in v),
          f"op {op.get('name')!r}: {key} must be a list of 1-3 positive integers, got {v!r}")
    return tuple(v)


def expected_arrays(op: dict, spec: CrossbarSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{array name: (dtype, shape)} that op `op` needs (docs/export-format.md)."""
    name, kind = op["name"], op["op"]
    base = name.rsplit(".", 1)[0]
    if kind == "crossbar":
        _ints(op, "rows", "rows_per_tile", "slices", "weight_bits")
        check(op["rows_per_tile"] >= 1 and op["slices"] >= 1, f"op {name!r}: rows_per_tile and slices must be >= 1")
        c_out = _shape(op, "out_shape")[0]
        shape = (math.ceil(op["rows"] / op["rows_per_tile"]), math.ceil(c_out / spec.columns), op["slices"],
                 spec.rows, spec.columns)
        return {f"{op['layer']}.g_pos": ("uint8", shape), f"{op['layer']}.g_neg": ("uint8", shape)}
    if kind in ("compare", "requant", "stream_code"):
        _ints(op, "channels")
        c = (op["channels"],)
        fields = {"compare": [("theta", "int64"), ("mode", "int8"), ("const", "int8")],
                  "requant": [("mult", "int64"), ("offset", "int64"), ("exponent", "int64")],
                  "stream_code": [("theta_in", "int64")]}[kind]
        return {f"{base}.{f}": (dt, c) for f, dt in fields}
    if kind == "levels":
        _ints(op, "channels", "levels")
        c = op["channels"]
        return {f"{base}.theta": ("int64", (c, op["levels"])), f"{base}.mode": ("int8", (c,)),
                f"{base}.const": ("int64", (c,))}
    if kind == "logits":
        _ints(op, "classes")
        return {f"{base}.bias_int": ("int64", (op["classes"],))}
    return {}


def _infer(op: dict, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The output shape of `op` from its inputs' shapes; a CimnasError when they do not fit."""
    name, kind = op["name"], op["op"]
    ins = op.get("inputs")
    check(isinstance(ins, list) and all(i in shapes for i in ins),
          f"op {name!r} reads a tensor no earlier op writes ({ins!r})")
    x = shapes[ins[0]] if ins else ()
    if kind == "encode":
        check(op.get("kind") in ("thermometer", "binary", "dorefa") and op.get("layout") in ("conv", "flat"),
              f"op {name!r}: unknown input encoding {op.get('kind')!r} / layout {op.get('layout')!r}")
        _ints(op, "levels")
        return _shape(op, "out_shape")
    if kind == "crossbar":
        in_shape, out_shape = _shape(op, "in_shape"), _shape(op, "out_shape")
        if op.get("kind") == "conv":
            _ints(op, "kernel", "stride", "padding")
            k, s, p = op["kernel"], op["stride"], op["padding"]
            check(len(in_shape) == 3 and len(out_shape) == 3 and x == in_shape and s >= 1 and k >= 1,
                  f"op {name!r}: input shape {x} does not fit the layer's in_shape {in_shape}")
            hw = tuple((d + 2 * p - k) // s + 1 for d in in_shape[1:])
            check(hw == out_shape[1:] and op["rows"] == k * k * in_shape[0],
                  f"op {name!r}: out_shape {out_shape} / rows {op['rows']} do not fit kernel {k}, stride {s}, "
                  f"padding {p} on {in_shape}")
        else:
            check(op.get("kind") == "fc" and len(out_shape) == 1 and math.prod(x) == math.prod(in_shape)
                  == op["rows"], f"op {name!r}: input shape {x} does not fit the FC's {op.get('rows')} rows")
        return out_shape
    if kind == "maxpool":
        _ints(op, "kernel", "stride")
        k, s = op["kernel"], op["stride"]
        check(len(x) == 3 and k >= 1 and s >= 1 and min(x[1:]) >= k, f"op {name!r}: a {k}x{k} max-pool does not "
              f"fit its input shape {x}")
        return (x[0], *((d - k) // s + 1 for d in x[1:]))
    if kind in ("compare", "requant", "stream_code", "levels"):
        check(len(x) in (1, 3) and x[0] == op["channels"],
              f"op {name!r}: {op['channels']} channels do not fit its input shape {x}")
        if kind == "requant":
            _ints(op, "bits", "shift")
        return x
    if kind == "add":
        _ints(op, "stride", "bits")
        check(len(ins) == 2 and len(x) == 3 and len(shapes[ins[1]]) == 3 and op["stride"] >= 1,
              f"op {name!r}: an add takes two (C, H, W) tensors and a stride >= 1")
        sc = shapes[ins[1]]
        hw = tuple(math.ceil(d / op["stride"]) for d in sc[1:])
        check(hw == x[1:], f"op {name!r}: shortcut {sc} subsampled by {op['stride']} does not fit {x}")
        return x
    if kind == "logits":
        check(x == (op["classes"],), f"op {name!r}: {op['classes']} classes do not fit its input shape {x}")
        return x
    raise CimnasError(f"op {name!r}: unknown op {kind!r}; this format version knows {', '.join(OPS)}")


def validate(doc: dict) -> CrossbarSpec:
    """Check a model.json document (version, fields, shapes, array table); returns its crossbar spec."""
    check(isinstance(doc, dict) and doc.get("format") == FORMAT,
          f"not a {FORMAT} model.json (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    check(doc.get("version") == VERSION, f"export format version {doc.get('version')!r} is not supported (this "
          f"cimnas reads version {VERSION}); re-export the checkpoint with this cimnas")
    try:
        spec = CrossbarSpec(**doc["crossbar"])
        spec.validate()
    except (KeyError, TypeError) as e:
        raise CimnasError(f"model.json: bad crossbar spec ({e}); re-export the checkpoint") from e
    ops, table = doc.get("ops"), doc.get("arrays")
    check(isinstance(ops, list) and ops and all(isinstance(o, dict) for o in ops) and isinstance(table, dict),
          "model.json: 'ops' must be a non-empty list of objects and 'arrays' an object")
    shapes: dict[str, tuple[int, ...]] = {}
    needed: dict[str, tuple[str, tuple[int, ...]]] = {}
    for op in ops:
        check(isinstance(op.get("name"), str) and op.get("op") in OPS, f"model.json: bad op {op.get('name')!r} "
              f"({op.get('op')!r}); known ops: {', '.join(OPS)}")
        check(op["name"] not in shapes, f"model.json: op name {op['name']!r} written twice")
        shapes[op["name"]] = _infer(op, shapes)
        exp = expected_arrays(op, spec)
        check(op.get("arrays", []) == list(exp), f"model.json: op {op['name']!r} must name the arrays {list(exp)}")
        needed.update(exp)
    check(ops[-1]["op"] == "logits", "model.json: the last op must be 'logits'")
    check(set(table) == set(needed), f"model.json: array table {sorted(set(table) ^ set(needed))[:3]} does not "
          "match the ops")
    for n, (dtype, shape) in needed.items():
        entry = table[n]
        entry = entry if isinstance(entry, dict) else {}
        ok = entry.get("dtype") == dtype and entry.get("shape") == list(shape)
        check(ok and isinstance(entry.get("sha256"), str),
              f"model.json: array {n} must be {dtype} {list(shape)}, the table says {entry.get('dtype')} "
              f"{entry.get('shape')}")
    return spec


def read_export(folder: str | Path) -> tuple[dict, dict[str, np.ndarray], CrossbarSpec]:
    """(model.json document, arrays, crossbar spec), all checked against the schema (module docstring)."""
    folder = Path(folder)
    check(folder.is_dir(), f"export folder {folder} not found; give the --out folder of `cimnas export`")
    for f in (JSON_NAME, NPZ_NAME):
        check((folder / f).is_file(), f"{folder / f} is missing; re-export the checkpoint")
    doc = read_json(folder / JSON_NAME)
    spec = validate(doc)
    arrays: dict[str, np.ndarray] = {}
    path = folder / NPZ_NAME
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            for n, entry in sorted(doc["arrays"].items()):
                check(n in names, f"{path}: array {n} is missing; re-export the checkpoint")
                a = npz[n]
                check(str(a.dtype) == entry["dtype"] and list(a.shape) == entry["shape"],
                      f"{path}: array {n} is {a.dtype} {list(a.shape)}, the schema says {entry['dtype']} "
                      f"{entry['shape']}; re-export the checkpoint")
                check(sha256(a) == entry["sha256"], f"{path}: array {n} does not match its SHA-256 in "
                      f"{JSON_NAME} (changed after export); re-export the checkpoint")
                arrays[n] = a
            extra = sorted(names - set(doc["arrays"]))
            if extra:
                raise CimnasError(f"{path}: unlisted array {extra[0]}; re-export the checkpoint")
    except CimnasError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError) as e:
        raise CimnasError(f"{path} is truncated or not an export archive ({type(e).__name__}); re-export the "
                          "checkpoint") from e
    return doc, arrays, spec
