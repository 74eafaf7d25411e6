"""`hawis_study run`: the whole HAWIS study as parallel runs, each its own resumable run folder; the same runs
with 1 and 2 Ray workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import cimnas.pipelines.studies.hawis_study as study
from cimnas.errors import CimnasError
from cimnas.parallel import Parallelism
from cimnas.pipelines.hawis import load_hawis_config
from cimnas.runs import load_payload
from cimnas.utils.io import read_jsonl

TINY = {"seed": 2, "device": "cpu", "data": {"name": "digits", "limit": 160, "test_limit": 60},
        "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
        "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
        "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2, "progress": False},
        "search": {"episodes": 3, "agent": "ddpg",
                   "agent_options": {"warmup_episodes": 2, "hidden_actor": [8], "hidden_critic": [8],
                                     "batch_size": 2},
                   "env": {"batch_size": 32, "slimmable_epochs": 0.2, "candidate_epochs": 0.2,
                           "bn_recal_batches": 1, "lam": 0.2}},
        "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "max_batches": 2,
                    "baselines": [1], "progress": False},
        "defects": {"trials": 2}}


def _cfg(tmp_path: Path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return load_hawis_config(path, [])


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _timeless(run: Path) -> tuple[list, dict]:
    """episodes.jsonl and stage_c.json without their wall-time fields."""
    eps = [{k: v for k, v in r.items() if k not in ("times_s", "time_s", "wall_s")}
           for r in read_jsonl(run / "episodes.jsonl")]
    sc = {label: {k: v for k, v in e.items() if k != "train_s"} for label, e in _json(run / "stage_c.json").items()}
    return eps, sc


def test_study_runs_every_folder_and_resumes(tmp_path, monkeypatch) -> None:
    out = tmp_path / "study"
    runs = study.run_study(_cfg(tmp_path), out, uniform=[0.5, 1])
    assert list(runs) == ["pretrain", "U-0.5x", "U-1x", "ddpg", "random"]  # task order, both phases
    uni = {k: _json(out / "uniform" / k / "stage_c.json") for k in ("U-0.5x", "U-1x")}
    assert [v["searched"]["widths"] for v in uni.values()] == [[8, 8], [16, 16]]  # U-kx of base widths [16, 16]
    lam = float((out / "lambda.txt").read_text())
    sup = load_payload(out / "pretrain" / "checkpoints" / "supernet.pt")["state_dict"]
    for agent in ("ddpg", "random"):
        cfg = yaml.safe_load((out / agent / "config.yaml").read_text())
        assert cfg["search"]["env"]["lam"] == lam and cfg["retrain"]["baselines"] == []
        assert cfg["search"]["agent"] == agent and cfg["seed"] == 2
        assert list(_json(out / agent / "stage_c.json")) == ["searched"]  # the baselines are uniform/, not here
        copied = load_payload(out / agent / "checkpoints" / "supernet.pt")["state_dict"]
        assert all(torch.equal(copied[k], sup[k]) for k in sup)  # both searches start from the one super-net
        assert len(read_jsonl(out / agent / "episodes.jsonl")) == 3
    assert "| ddpg best reward" in (out / "compare.md").read_text() and (out / "compare_fig1.png").is_file()
    phases = _json(out / "run.json")["executions"]
    assert [(p["phase"], p["engine"]) for p in phases] == [("pretrain+uniform", "in-process"), ("search", "in-process")]
    before = {a: _timeless(out / a) for a in ("ddpg", "random")}

    calls = []
    real = study.run_pipeline
    monkeypatch.setattr(study, "run_pipeline", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    monkeypatch.setattr("cimnas.pipelines.hawis.stage_c.retrain_job", lambda *a, **k: pytest.fail("retrained"))
    again = study.run_study(_cfg(tmp_path), out, uniform=[0.5, 1])  # resumes: every folder is finished
    assert len(calls) == 5 and {a: _timeless(out / a) for a in ("ddpg", "random")} == before
    assert again["U-1x"]["final"]["test_accuracy"] == runs["U-1x"]["final"]["test_accuracy"]
    with pytest.raises(CimnasError, match="cannot resume"):  # another HAWIS config: not this study
        study.run_study(load_hawis_config(tmp_path / "cfg.yaml", ["seed=5"]), out, uniform=[0.5, 1])
    with pytest.raises(CimnasError, match="--agents"):
        study.run_study(_cfg(tmp_path), tmp_path / "x", agents=["ppo"])
    assert study.main(["run", str(tmp_path / "cfg.yaml"), str(tmp_path / "y"), "--uniform", "0"]) == 2


@pytest.mark.ray
def test_study_same_runs_with_two_ray_workers(ray_cluster, tmp_path) -> None:
    cfg = _cfg(tmp_path)
    kw = {"uniform": [1], "agents": ["random"], "lam": 0.3}  # no calibration: lambda given
    one = study.run_study(cfg, tmp_path / "one", **kw)
    two = study.run_study(cfg, tmp_path / "two", par=Parallelism(2), **kw)
    assert list(one) == list(two) == ["pretrain", "U-1x", "random"]
    assert _timeless(tmp_path / "one" / "random") == _timeless(tmp_path / "two" / "random")
    sc = {n: {k: v for k, v in _json(tmp_path / n / "uniform" / "U-1x" / "stage_c.json")["searched"].items()
              if k != "train_s"} for n in ("one", "two")}
    assert sc["one"] == sc["two"]
    phases = _json(tmp_path / "two" / "run.json")["executions"]
    assert [(p["phase"], p["engine"], p["workers"]) for p in phases] == [("pretrain+uniform", "ray", 2),
                                                                         ("search", "ray", 2)]
