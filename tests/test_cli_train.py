"""`cimnas train` / `cimnas datasets` in-process: a real run, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from cimnas.cli import main
from cimnas.data import load_dataset
from cimnas.train import evaluate

TINY = ["--set", "data.limit=120", "--set", "data.test_limit=60", "--set", "model.width_mult=0.25",
        "--set", "train.epochs=1", "--set", "train.batch_size=40", "--set", "train.progress=false"]


def train_cli(out, *extra) -> int:
    return main(["train", "--out", str(out), *TINY, *extra])


def assert_one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cimnas: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert train_cli(out, "--config", "configs/train/digits_binary.yaml") == 0
    return out


def test_train_writes_a_loadable_run(finished_run, capsys):
    from cimnas.nn.models import rebuild_model
    from cimnas.runs import load_payload

    final = json.loads((finished_run / "final.json").read_text())
    assert final["flops"] == 0 and final["biops"] > 0  # fully binarized: no FP MACs in conv/FC
    ckpt = load_payload(finished_run / "checkpoints" / "checkpoint.pt", {"arch": dict, "state_dict": dict})
    model = rebuild_model(ckpt["arch"])  # the checkpoint alone rebuilds the model
    model.load_state_dict(ckpt["state_dict"])
    assert ckpt["config"]["model"]["precision"] == "binary" and ckpt["epoch"] == 1
    splits = load_dataset("digits", limit=120, test_limit=60)  # config: data.seed 0
    assert evaluate(model, splits.test, device="cpu") == pytest.approx(final["test_acc"])
    assert evaluate(model, splits.search_eval, device="cpu") == pytest.approx(final["val_acc"])
    for _, m in __import__("cimnas.nn.layers", fromlist=["quant_layers"]).quant_layers(model):
        w = m.quantized_weight().detach()
        assert torch.unique(w).numel() <= 2  # binary weights take two values (+-mean|w|)


def folder_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_existing_run_folder_untouched(finished_run, capsys):
    before = folder_bytes(finished_run)
    rc = train_cli(finished_run, "--config", "configs/train/digits_binary.yaml")
    assert_one_line_error(capsys, rc, "already holds a train run", "--resume")
    assert folder_bytes(finished_run) == before


@pytest.mark.parametrize("override, needles", [
    ("data.name=svhn", ["unknown dataset 'svhn'", "digits"]),
    ("model.name=vgg99", ["unknown model 'vgg99'", "resnet20"]),
    ("train.nonsense=1", ["unknown config key 'train.nonsense'"]),
    ("train.epochs=many", ["train.epochs", "integer"]),
    ("model.widths=[16,-4,16]", ["model.widths", "positive"]),
    ("model.widths=[16,16]", ["19 widths"]),
    ("model.precision=ternary", ["model.precision"]),
])
def test_bad_config_values(tmp_path, capsys, override, needles):
    rc = train_cli(tmp_path / "run", "--set", override)
    assert_one_line_error(capsys, rc, *needles)
    assert not (tmp_path / "run").exists()


def test_missing_data_dir(tmp_path, capsys):
    rc = train_cli(tmp_path / "run", "--set", "data.name=mnist", "--data-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(capsys, rc, "nowhere", "not found")


def test_corrupt_idx(tmp_path, capsys):
    d = tmp_path / "mnist"
    d.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (d / stem).write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x01" * 10)
    rc = train_cli(tmp_path / "run", "--set", "data.name=mnist", "--data-dir", str(d))
    assert_one_line_error(capsys, rc, "truncated", "train-images-idx3-ubyte")


def test_corrupt_checkpoint_on_resume(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    ck = run / "checkpoints" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: len(ck.read_bytes()) // 2])
    rc = train_cli(run, "--config", "configs/train/digits_binary.yaml", "--resume")
    assert_one_line_error(capsys, rc, "checkpoint", "corrupt")


def test_resume_with_other_config_lists_keys(finished_run, capsys):
    rc = train_cli(finished_run, "--config", "configs/train/digits_binary.yaml", "--resume",
                   "--set", "train.lr=0.3", "--set", "model.width_mult=0.5")
    assert_one_line_error(capsys, rc, "model.width_mult", "train.lr")


def test_datasets_command(capsys):
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "imagenet"} <= names
    assert main(["datasets"]) == 0
    assert "digits" in capsys.readouterr().out


@pytest.mark.parametrize("precision, bits", [("float", None), ("kbit", 8)])
def test_float_and_8bit_baselines_train_through_the_same_code(tmp_path, capsys, precision, bits):
    name = "float" if precision == "float" else "8bit"
    rc = train_cli(tmp_path / "run", "--config", f"configs/train/digits_{name}.yaml")
    assert rc == 0, capsys.readouterr().err
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["biops"] == 0 and final["flops"] > 0  # no 1-bit x 1-bit MACs in these baselines
    assert final["arch"]["precision"] == precision and final["arch"]["bits"] == bits


def test_shipped_configs_load():
    from pathlib import Path

    from cimnas.config import load_config
    from cimnas.pipelines.train import TrainRunConfig

    files = sorted(Path("configs/train").glob("*.yaml")) + sorted(Path("configs/ablation").glob("*.yaml"))
    assert len(files) >= 7
    cfgs = {f.stem: load_config(TrainRunConfig, f) for f in files}
    assert not cfgs["base"].model.topology_mod and cfgs["tm"].model.topology_mod
    assert cfgs["base"].train.regularizer == cfgs["tm"].train.regularizer == "l2"
    assert cfgs["tm_ts"].train.regularizer == "two_side" and cfgs["tm_ts"].model.topology_mod
    assert all(c.seed == 0 and c.data.seed == 0 for c in cfgs.values())  # --set seed=1 keeps the data subset
