"""`cimnas export` / `cimnas simulate`: byte-identical re-export, defects, and one-line errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cimnas.cli import main
from cimnas.deploy.fileformat import JSON_NAME, NPZ_NAME, npz_bytes
from cimnas.nn.models import build_model, save_model_checkpoint
from deploy_kit import tiny_model
from faultkit import assert_one_line, folder_hash

DIGITS = {"name": "digits", "in_channels": 1, "image_size": 8, "num_classes": 10}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    ckpt = root / "resnet.pt"
    save_model_checkpoint(ckpt, tiny_model("resnet-A"), DIGITS)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(root / "ex"), "--residual-bits", "7",
                 "--set", "rows=32"]) == 0
    return root, ckpt


def _one_line_error(capsys, argv) -> str:
    """Exit 2 with one line on stderr (faultkit's check), and the folder it names unchanged."""
    before = folder_hash(argv[1]) if argv[0] == "simulate" else None
    line = assert_one_line(main(argv), capsys.readouterr().err)
    assert before is None or folder_hash(argv[1]) == before
    return line


def test_reexport_is_byte_identical(exported, tmp_path):
    root, ckpt = exported
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path), "--residual-bits", "7",
                 "--set", "rows=32"]) == 0
    for f in (JSON_NAME, NPZ_NAME):
        assert (tmp_path / f).read_bytes() == (root / "ex" / f).read_bytes()
    # into the same folder again: allowed (it holds only an export) and unchanged
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path), "--residual-bits", "7",
                 "--set", "rows=32"]) == 0
    assert (tmp_path / NPZ_NAME).read_bytes() == (root / "ex" / NPZ_NAME).read_bytes()


def test_simulate_json_and_seeded_defects(exported, capsys):
    root, _ = exported
    argv = ["simulate", str(root / "ex"), "--max-samples", "40", "--json"]
    assert main(argv) == 0
    ideal = json.loads(capsys.readouterr().out)
    assert ideal["samples"] == 40 and 0 <= ideal["accuracy"] <= 1 and ideal["residual_bits"] == 7
    assert main(argv + ["--adc"]) == 0  # 6-bit ADC on 1-bit cells: row groups of 63 fit, nothing clips
    assert json.loads(capsys.readouterr().out)["predictions_sha256"] == ideal["predictions_sha256"]
    runs = []
    for seed in (3, 3, 4):
        assert main(argv + ["--sa1", "0.3", "--sigma", "0.3", "--seed", str(seed)]) == 0
        runs.append(json.loads(capsys.readouterr().out)["predictions_sha256"])
    assert runs[0] == runs[1] and runs[0] != runs[2] and runs[0] != ideal["predictions_sha256"]


def _copy(src, dst):
    dst.mkdir()
    for f in (JSON_NAME, NPZ_NAME):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def _arrays(folder) -> dict:
    with np.load(folder / NPZ_NAME, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_bad_export_folders(exported, tmp_path, capsys):
    ex = exported[0] / "ex"
    missing = _copy(ex, tmp_path / "missing")
    (missing / NPZ_NAME).unlink()
    assert "missing" in _one_line_error(capsys, ["simulate", str(missing)])

    cut = _copy(ex, tmp_path / "cut")
    data = (cut / NPZ_NAME).read_bytes()
    (cut / NPZ_NAME).write_bytes(data[: len(data) // 2])
    assert "truncated" in _one_line_error(capsys, ["simulate", str(cut)])

    tampered = _copy(ex, tmp_path / "tampered")
    arrays = _arrays(tampered)
    arrays["blocks.0.bn1.theta"] = arrays["blocks.0.bn1.theta"] + 1
    (tampered / NPZ_NAME).write_bytes(npz_bytes(arrays))
    assert "SHA-256" in _one_line_error(capsys, ["simulate", str(tampered)])

    dropped = _copy(ex, tmp_path / "dropped")
    arrays = _arrays(dropped)
    del arrays["fc.g_pos"]
    (dropped / NPZ_NAME).write_bytes(npz_bytes(arrays))
    assert "fc.g_pos is missing" in _one_line_error(capsys, ["simulate", str(dropped)])


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d["ops"][1].update(out_shape=[5, 8, 8]), "fit"),
    (lambda d: d["arrays"]["bn1.mult"].update(shape=[3]), "must be int64"),
    (lambda d: d["ops"][3].update(channels=2), "do not fit"),
])
def test_bad_json(exported, tmp_path, capsys, edit, words):
    folder = _copy(exported[0] / "ex", tmp_path / "bad")
    doc = json.loads((folder / JSON_NAME).read_text())
    edit(doc)
    (folder / JSON_NAME).write_text(json.dumps(doc))
    assert words in _one_line_error(capsys, ["simulate", str(folder)])


@pytest.mark.parametrize("kw, layer", [
    ({"precision": "float"}, "fcs.0"),
    ({"precision": "binary", "refactor": {"binarize_last": False}}, "fcs.1"),
])
def test_not_integer_model_names_first_float_layer(tmp_path, capsys, kw, layer):
    ckpt = tmp_path / "m.pt"
    save_model_checkpoint(ckpt, build_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden_sizes=[8],
                                            **kw), DIGITS)
    err = _one_line_error(capsys, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")])
    assert f"layer {layer} is not integer" in err and "precision: binary" in err and "k-bit" in err
    assert not (tmp_path / "out").exists()


def test_kbit_resnet_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "k.pt"
    save_model_checkpoint(ckpt, build_model("resnet20", in_channels=1, num_classes=10, image_size=8, width_mult=0.25,
                                            precision="kbit", bits=2), DIGITS)
    assert "residual blocks" in _one_line_error(capsys, ["export", "--checkpoint", str(ckpt), "--out",
                                                         str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_folder_with_other_files(exported, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert "other files" in _one_line_error(capsys, ["export", "--checkpoint", str(exported[1]), "--out",
                                                     str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
