"""Issue 23, pattern 6: readers and the command shell hold against inputs of odd shape.

Deep nesting (files, overrides, JSON), a YAML list where a mapping goes, duplicate keys, a full disk while the
lock is written, Ctrl-C pressed several times, a Ray address with no cluster, GPUs asked of a host without one,
and a refused `hawis run` that must not leave its --out folder behind. Each: exit 2 (130 for Ctrl-C), one line,
no traceback, nothing changed on disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from faultkit import REPO, TINY_TRAIN, main_refused, snapshot, tiny_config, uae_run

DEEP_BLOCK = "seed: 0\nmodel:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(500)) + "  " * 501 + "v: 1\n"
DEEP_FLOW = "seed: 0\nmodel: " + "{a: " * 500 + "1" + "}" * 500 + "\n"
DEEP_LIST = "seed: 0\ndata: {options: {x: " + "[" * 300 + "]" * 300 + "}}\n"


@pytest.mark.parametrize("text", [DEEP_BLOCK, DEEP_FLOW, DEEP_LIST], ids=["block", "flow", "list"])
def test_deeply_nested_config_file(tmp_path, capsys, text):
    assert len(text.encode()) < 300_000
    cfg = tiny_config(tmp_path, text, "deep.yaml")
    main_refused(capsys, "train", "--config", cfg, "--out", tmp_path / "run", needles=("deep.yaml",))
    assert not (tmp_path / "run").exists()


def test_deeply_nested_override_and_json(tmp_path, capsys):
    main_refused(capsys, "train", "--config", tiny_config(tmp_path), "--out", tmp_path / "run",
                 "--set", "data.options={a: " + "[" * 400 + "]" * 400 + "}", needles=("data.options",))
    run = uae_run(tmp_path / "UE")
    (run / "final.json").write_text("[" * 100_000 + "]" * 100_000)
    before = snapshot(tmp_path)
    main_refused(capsys, "uae", "report", "--runs", run, needles=("final.json", "nested too deeply"))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("text, needle", [
    ("- rows: 128\n- columns: 128\n", "not a list"),
    ("rows: 128\nrows: 64\n", "duplicate key 'rows' (line 2)"),  # the case: the last one won
    ("rows: 128\ncolumns: 128\nrows: 128\n", "duplicate key 'rows' (line 3)"),  # even with the same value
    ("rows: 128\n\"rows\": 64\n", "duplicate key 'rows'"),  # quoted the same key
])
def test_spec_file_of_odd_shape(tmp_path, capsys, text, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    main_refused(capsys, "energy", "--model", "mlp", "--spec", spec, needles=("spec.yaml", needle))


@pytest.mark.parametrize("text, needle", [
    (TINY_TRAIN + "seed: 1\n", "duplicate key 'seed'"),
    (TINY_TRAIN.replace("train: {", "train: {lr: 0.5, "), "duplicate key 'lr'"),
    (TINY_TRAIN + "model: {name: lenet5}\n", "duplicate key 'model'"),
])
def test_duplicate_keys_in_a_config(tmp_path, capsys, text, needle):
    cfg = tiny_config(tmp_path, text, "dup.yaml")
    main_refused(capsys, "train", "--config", cfg, "--out", tmp_path / "run", needles=(needle,))
    assert not (tmp_path / "run").exists()
    main_refused(capsys, "train", "--config", tiny_config(tmp_path), "--out", tmp_path / "run",
                 "--set", "data.options={a: 1, a: 2}", needles=("duplicate key 'a'",))


def test_yaml_merge_keys_may_still_override():
    from cimnas.config import safe_yaml

    assert safe_yaml("b: &b {x: 1, y: 2}\nc: {<<: *b, x: 5}\n", "t") == {"b": {"x": 1, "y": 2}, "c": {"x": 5, "y": 2}}


@pytest.mark.parametrize("where", ["new", "empty"])
def test_full_disk_while_the_lock_is_written(tmp_path, capsys, monkeypatch, where):
    out = tmp_path / "run"
    if where == "empty":
        out.mkdir()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    main_refused(capsys, "train", "--config", tiny_config(tmp_path), "--out", out,
                 needles=(".lock", "No space left on device", "free some disk space"))
    monkeypatch.undo()
    assert (not out.exists()) if where == "new" else not list(out.iterdir())  # no lock file or folder left


def test_repeated_ctrl_c_is_one_line(tmp_path):
    """Three SIGINTs 10 ms apart while training: exit 130 and the one line, no atexit traceback."""
    cfg = tiny_config(tmp_path, TINY_TRAIN.replace("epochs: 1", "epochs: 100000"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "cimnas", "train", "--config", str(cfg), "--out",
                             str(tmp_path / "run")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "run" / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "run" / "metrics.jsonl").is_file(), "training did not start"
        for _ in range(3):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.01)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cimnas: interrupted"), err


@pytest.mark.parametrize("address, needle", [("127.0.0.1:1", "no Ray cluster answers"),
                                             ("localhost", "is not host:port"),
                                             ("127.0.0.1:99999", "is not host:port")])
def test_ray_address_without_a_cluster(tmp_path, capsys, address, needle):
    main_refused(capsys, "robustness", "--checkpoint", tmp_path / "never-read.pt", "--device", "cpu",
                 "--ray-address", address, needles=(needle,))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
@pytest.mark.parametrize("gpus, workers", [("1", "2"), ("0.25", "2"), ("2", "1")])
def test_task_gpus_without_a_gpu_is_refused_up_front(tmp_path, capsys, gpus, workers):
    main_refused(capsys, "robustness", "--checkpoint", tmp_path / "never-read.pt", "--device", "cpu",
                 "--task-gpus", gpus, "--workers", workers, needles=("--task-gpus", "has 0"))
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


HAWIS = {"seed": 3, "device": "cpu", "data": {"name": "digits", "limit": 160, "test_limit": 60},
         "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
         "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
         "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2},
         "search": {"episodes": 2, "agent": "random"}, "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05}}


@pytest.mark.parametrize("widths, needle", [("[1,2,3]", "3 entries"), ("[4,4,3]", "retrain.widths"),
                                            ("[100000000,4,4]", "retrain.widths")])
@pytest.mark.parametrize("where", ["new", "empty"])
def test_refused_hawis_run_leaves_no_out_folder(tmp_path, capsys, widths, needle, where):
    cfg = tmp_path / "h.yaml"
    cfg.write_text(yaml.safe_dump(HAWIS))
    out = tmp_path / "H"
    if where == "empty":
        out.mkdir()
    main_refused(capsys, "hawis", "run", "--config", cfg, "--out", out, "--set", f"retrain.widths={widths}",
                 needles=(needle,))
    assert (not out.exists()) if where == "new" else not list(out.iterdir())  # the fixed command needs no --resume
