"""fit() under a 2-process gloo group (torch.multiprocessing.spawn, a file store: what torchrun sets up) follows
the same global batches as one process.

Tolerances, from what differs: a BN-free model differs only by float32 summation order (two half-batch gradients
all-reduced and averaged vs one full-batch gradient): measured 1.5e-8 max abs weight difference after 24 steps,
asserted within 1e-5; a
BatchNorm model uses per-rank BN statistics (no SyncBatchNorm on CPU), so it is NOT expected to equal the
single-process run (measured 0.11 max abs difference): there the test checks that the ranks agree exactly.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from cimnas import distributed
from cimnas.cli import main
from cimnas.config import OptimConfig, load_config
from cimnas.data import load_dataset
from cimnas.errors import CimnasError
from cimnas.nn.models import build_model
from cimnas.pipelines.train import TrainRunConfig, run_training
from cimnas.runs import load_payload
from cimnas.train import fit

WORLD = 2
SRC = str(Path(__file__).resolve().parents[1] / "src")
# batch 25 splits 13 / 12 between the ranks: the loss scaling must weigh the shares by their sizes
CFG = OptimConfig(epochs=2, batch_size=25, lr=0.05, milestones=[1], progress=False, augment=False)


def _splits():
    return load_dataset("digits", seed=0, limit=300)


def _model(splits, bn: bool):
    torch.manual_seed(0)
    return build_model("mlp", in_channels=splits.in_channels, num_classes=splits.num_classes,
                       image_size=splits.image_size, precision="float", hidden_sizes=(32, 32), bn=bn)


def _rank_main(rank: int, store: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    device = distributed.init("cpu", init_method=f"file://{store}")
    splits = _splits()
    result: dict = {"rank": distributed.rank(), "world": distributed.world_size(),
                    "execution": distributed.execution()}
    for bn in (False, True):
        model = _model(splits, bn)
        if rank == 1:  # a different init on rank 1: DDP must start every rank from rank 0's weights
            torch.nn.init.normal_(next(model.parameters()))
        called = []
        recs = fit(model, splits.train, CFG, device=device, seed=3, eval_split=splits.test,
                   on_epoch_end=lambda e, r, c=called: c.append(e))
        result[bn] = {"state": copy.deepcopy(model.state_dict()), "records": recs, "called": called}
    try:
        fit(_model(splits, False), splits.train, CFG, device=device, seed=3, step=lambda x, y: 0.0)
    except CimnasError as e:
        result["step_error"] = str(e)
    distributed.barrier()
    distributed.shutdown()
    with open(f"{out}.{rank}", "wb") as f:
        pickle.dump(result, f)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(str(tmp / "store"), str(tmp / "out")), nprocs=WORLD, join=True)
    out = []
    for r in range(WORLD):
        with open(tmp / f"out.{r}", "rb") as f:
            out.append(pickle.load(f))
    return out


def test_ranks_joined_the_group(ranks) -> None:
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == WORLD for r in ranks)
    assert ranks[0]["execution"] == {"engine": "torchrun", "world_size": 2, "backend": "gloo"}


def test_two_processes_equal_one_process(ranks) -> None:
    splits = _splits()
    single = _model(splits, bn=False)
    recs = fit(single, splits.train, CFG, device="cpu", seed=3, eval_split=splits.test)
    ddp = ranks[0][False]
    for k, v in single.state_dict().items():
        assert torch.allclose(ddp["state"][k], v, rtol=0, atol=1e-5), k
    for a, b in zip(ddp["records"], recs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1 / 300 + 1e-9)  # at most one sample flips
        assert a["eval_acc"] == pytest.approx(b["eval_acc"], abs=1 / len(splits.test) + 1e-9)
    moved = max(float((v - _model(splits, False).state_dict()[k]).abs().max()) for k, v in ddp["state"].items())
    assert moved > 1e-2  # the weights really trained (the tolerance is small next to the change)


def test_ranks_agree_and_rank0_logs(ranks) -> None:
    for bn in (False, True):
        a, b = ranks[0][bn], ranks[1][bn]
        for k in a["state"]:
            assert torch.equal(a["state"][k], b["state"][k]), (bn, k)  # BN running stats included
        assert a["records"] == b["records"]
        assert a["called"] == [1, 2] and b["called"] == []  # on_epoch_end: rank 0 only


def test_custom_step_needs_a_wrapped_model(ranks) -> None:
    assert "needs the model wrapped" in ranks[0]["step_error"]
    assert distributed.world_size() == 1 and distributed.is_rank0()  # this process: no group
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, "cpu") is model and distributed.execution()["world_size"] == 1


# ---------------------------------------------------------------------------- torchrun -m cimnas train
TRAIN = {"seed": 0, "device": "cpu", "data": {"name": "digits", "limit": 200},
         "model": {"name": "mlp", "precision": "float", "options": {"hidden_sizes": [32], "bn": False}},
         "train": {"epochs": 2, "batch_size": 25, "lr": 0.05, "milestones": [1], "progress": False,
                   "augment": False}}


def _torchrun(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "cimnas", "train", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC})


def test_torchrun_cimnas_train_resume_equals_one_process(tmp_path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(TRAIN))
    single = run_training(load_config(TrainRunConfig, cfg, []), tmp_path / "single")
    out = tmp_path / "ddp"  # epoch 1 in one process, resumed to epoch 2 by 2 torchrun processes
    run_training(load_config(TrainRunConfig, cfg, ["train.epochs=1"]), out)
    second = _torchrun("--config", str(cfg), "--out", str(out), "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("test accuracy") == 1  # rank 0 reports, once
    a = load_payload(tmp_path / "single" / "checkpoints" / "checkpoint.pt")
    b = load_payload(out / "checkpoints" / "checkpoint.pt")
    assert b["epoch"] == 2 and all(torch.allclose(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=1e-5)
                                   for k in a["state_dict"])
    final = json.loads((out / "final.json").read_text())
    assert final["test_acc"] == pytest.approx(single["test_acc"], abs=1.5 / 100)  # at most one test sample
    runs = json.loads((out / "run.json").read_text())["executions"]
    assert [(r["world_size"], r["start_epoch"]) for r in runs] == [(1, 0), (2, 1)]
    assert runs[1]["engine"] == "torchrun" and runs[1]["backend"] == "gloo"


@pytest.mark.parametrize("argv", [["hawis", "run"], ["hawis", "search"],
                                  ["uae", "search", "--config", "configs/uae/demo.yaml"]])
def test_commands_without_ddp_refuse_torchrun(argv, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not run under torchrun" in err[0] and not (tmp_path / "o").exists()
    assert "`cimnas hawis pretrain` and `cimnas hawis retrain`" in err[0]  # what does run under torchrun
