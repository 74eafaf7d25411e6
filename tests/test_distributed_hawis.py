"""HAWIS stages A and C under torchrun (2 processes, gloo) against one process with the same global batches, and
rank 0's refusals reaching every rank.

Tolerance: the models are BN-free binarized MLPs, so two processes differ from one only by float32 summation
order (two half-batch gradients averaged in one all-reduce vs one full-batch gradient): measured max abs weight
differences 1.8e-7 for stage A (PRETRAIN, 2 epochs of 8 batches, both epochs under torchrun) and 3.0e-8 for stage
C's searched model (RETRAIN), asserted within 1e-5, far below how much the weights move (> 1e-2). Accuracies may
differ by at most one evaluated sample. A BatchNorm model is not expected to match: each rank normalises its
share with its own batch statistics (PRETRAIN with bn: 0.64 max abs difference, docs/scale.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cimnas.pipelines.hawis.stage_a as stage_a
from cimnas.cli import main
from cimnas.pipelines.hawis import load_hawis_config, make_context, run_pipeline
from cimnas.runs import RunFolder, load_payload

pytestmark = pytest.mark.xdist_group("cluster")  # with tests/test_distributed.py: one process group at a time

WORLD = 2
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
# batch 25 splits 13 / 12 between the ranks: the gradient average must weigh the shares by their sizes
BASE = {"seed": 3, "device": "cpu", "data": {"name": "digits", "limit": 300, "test_limit": 60},
        "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": False}},
        "space": {"r_min": 0.5, "r_max": 2.0, "d": 4}, "defects": {"trials": 2}}
PRETRAIN = {**BASE, "pretrain": {"epochs": 2, "batch_size": 25, "lr": 0.2, "milestones": [1], "max_batches": 8,
                                 "n_random": 1, "inplace_distill": True, "progress": False}}
RETRAIN = {**BASE, "retrain": {"epochs": 2, "batch_size": 25, "lr": 0.2, "milestones": [1], "max_batches": 8,
                               "widths": [8, 12], "baselines": [1], "references": ["fp"], "progress": False}}


def _config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _torchrun(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "cimnas", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=ENV)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _context(cfg, tmp_path: Path):
    return make_context(cfg, RunFolder.open(tmp_path / "scratch", "hawis", cfg, resume=True))


def _executions(run: Path) -> list[dict]:
    return json.loads((run / "run.json").read_text())["executions"]


def test_torchrun_hawis_pretrain_resumed_equals_one_process(tmp_path, monkeypatch) -> None:
    cfg_path = _config(tmp_path, PRETRAIN)
    cfg = load_hawis_config(cfg_path, [])
    run_pipeline(cfg, tmp_path / "one", stages=("pretrain",))

    class Killed(Exception):
        pass

    def fit_killed_after_epoch_1(*args, on_epoch_end, **kw):
        def end(epoch, record):
            on_epoch_end(epoch, record)
            if epoch == 1:
                raise Killed

        return stage_a_fit(*args, on_epoch_end=end, **kw)

    stage_a_fit = stage_a.fit
    monkeypatch.setattr(stage_a, "fit", fit_killed_after_epoch_1)
    with pytest.raises(Killed):  # epoch 1 in one process, epoch 2 by two torchrun processes
        run_pipeline(cfg, tmp_path / "ddp", stages=("pretrain",))
    monkeypatch.undo()
    assert not (tmp_path / "ddp" / "checkpoints" / "supernet.pt").exists()
    done = _torchrun("hawis", "pretrain", "--config", str(cfg_path), "--out", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("HAWIS run folder") == 1  # rank 0 reports, once
    assert "stage A: resuming after epoch 1" in (tmp_path / "ddp" / "run.log").read_text()
    one, ddp = (load_payload(tmp_path / n / "checkpoints" / "supernet.pt") for n in ("one", "ddp"))
    assert _max_diff(one["state_dict"], ddp["state_dict"]) < 1e-5
    ctx = _context(cfg, tmp_path)
    init = stage_a.build_supernet(ctx).state_dict()
    assert _max_diff(init, one["state_dict"]) > 1e-2  # the weights really trained
    one_sample = 1 / len(ctx.splits.search_eval) + 1e-9
    for k, v in one["metrics"].items():  # largest / smallest sub-net accuracy on search_eval
        assert ddp["metrics"][k] == pytest.approx(v, abs=one_sample), k
    runs = _executions(tmp_path / "ddp")
    assert [r["world_size"] for r in runs] == [1, 2]
    assert runs[1]["engine"] == "torchrun" and runs[1]["backend"] == "gloo" and runs[1]["stages"] == ["pretrain"]


def test_torchrun_hawis_retrain_equals_one_process(tmp_path) -> None:
    cfg_path = _config(tmp_path, RETRAIN)
    cfg = load_hawis_config(cfg_path, [])
    run_pipeline(cfg, tmp_path / "one", stages=("retrain",))
    splits = _context(cfg, tmp_path).splits
    one_sample = {"val_accuracy": 1 / len(splits.search_eval) + 1e-9, "test_accuracy": 1 / len(splits.test) + 1e-9}
    done = _torchrun("hawis", "retrain", "--config", str(cfg_path), "--out", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("final model: test accuracy") == 1
    one, ddp = (json.loads((tmp_path / n / "stage_c.json").read_text()) for n in ("one", "ddp"))
    assert list(one) == list(ddp) == ["searched", "U-1x", "FP"]
    for label, a in one.items():
        b = ddp[label]
        assert b["widths"] == a["widths"] and b["energy_uj"] == a["energy_uj"], label
        for key in ("val_accuracy", "test_accuracy"):
            assert b[key] == pytest.approx(a[key], abs=one_sample[key]), (label, key)
    assert len({e["test_accuracy"] for e in one.values()}) > 1  # the models differ: the check can fail
    rob_a, rob_b = one["searched"]["robustness"], ddp["searched"]["robustness"]
    assert rob_b["trials"] == rob_a["trials"] == 2 and rob_b["mean"] == pytest.approx(rob_a["mean"],
                                                                                  abs=one_sample["test_accuracy"])
    a, b = (load_payload(tmp_path / n / "checkpoints" / "final_model.pt") for n in ("one", "ddp"))
    assert _max_diff(a["state_dict"], b["state_dict"]) < 1e-5
    final = json.loads((tmp_path / "ddp" / "final.json").read_text())
    assert final["widths"] == [8, 12] and final["source"] == "retrain.widths"
    run = _executions(tmp_path / "ddp")[-1]
    assert (run["engine"], run["world_size"], run["backend"], run["stages"]) == ("torchrun", 2, "gloo", ["retrain"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_ranks(*argv: str, timeout: float = 90) -> list[tuple[int, str]]:
    """Start the ranks ourselves (as srun would: no torchrun agent to kill the others when one fails) and wait
    at most `timeout` seconds for each; returns (exit code, stderr) per rank."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "cimnas", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**ENV, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(WORLD),
                                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for r in range(WORLD)]
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)  # a rank waiting forever fails the test here
            out.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@pytest.mark.parametrize("command", ["hawis", "train"])
def test_rank0_refusal_stops_every_rank(command, tmp_path) -> None:
    cfg_path = _config(tmp_path, PRETRAIN)
    held = tmp_path / "held"  # a HAWIS run of another config: `hawis pretrain` refuses to resume it, `train`
    RunFolder.open(held, "hawis", {**PRETRAIN, "seed": 4}).close()  # refuses a folder of another kind
    argv = (["hawis", "pretrain", "--config", str(cfg_path)] if command == "hawis"
            else ["train", "--set", "device=cpu", "--set", "data.limit=100", "--set", "train.epochs=1"])
    ranks = _launch_ranks(*argv, "--out", str(held))
    expected = "cannot resume" if command == "hawis" else "holds a 'hawis' run, not a 'train' run"
    lines = []
    for rc, err in ranks:
        assert rc == 2, err[-2000:]
        lines.append(err.strip().splitlines())
    assert all(len(ln) == 1 and expected in ln[0] for ln in lines), lines
    assert lines[0] == lines[1]  # rank 1 reports rank 0's error, word for word


def test_torchrun_and_ray_workers_do_not_mix(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["hawis", "retrain", "--out", str(tmp_path / "o"), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not mix" in err[0] and not (tmp_path / "o").exists()
