"""cimnas.parallel: results in task order whatever the worker count, on_result in task order (resume), one-line
CimnasErrors from tasks, retried worker deaths, and an in-process mode that never imports Ray."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cimnas.cli import main
from cimnas.config import OptimConfig, from_dict, validate
from cimnas.data import load_dataset
from cimnas.data.base import DataSplit
from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig
from cimnas.hardware.mapping import map_model
from cimnas.hardware.montecarlo import CachedBatches, evaluate_trials, mapped_draw, run_trial
from cimnas.nn.models import build_model, rebuild_model, save_model_checkpoint
from cimnas.parallel import Parallelism, TaskResources, add_parallel_args, parallelism_from_args, run_tasks
from cimnas.pipelines.hawis import load_hawis_config, run_pipeline
from cimnas.pipelines.uae.config import UAESearchConfig
from cimnas.pipelines.uae.search import run_search
from cimnas.runs import load_payload
from cimnas.train import fit
from cimnas.utils.io import read_jsonl
from cimnas.utils.seed import derive_seed, make_generator

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ---------------------------------------------------------------------------- tasks (module level: Ray imports them)
def noise_task(task_id, payload, shared):
    """A seeded toy task: its draw depends on (run seed, task id) only."""
    g = make_generator(derive_seed(shared["seed"], "toy", task_id))
    return float(torch.randn(payload, generator=g).sum())


def failing_task(task_id, payload, shared):
    if task_id == 2:
        raise CimnasError("task 2 has a bad level: choose a level in [0, 1]")
    return task_id


def zero_division_task(task_id, payload, shared):
    return 1 / payload


def dying_task(task_id, payload, shared):
    """Kills its worker the first time (a marker file remembers), then succeeds."""
    marker = Path(shared) / f"died-{task_id}"
    if not marker.exists():
        marker.write_text("x")
        os._exit(1)
    return task_id * 10


def slow_first_task(task_id, payload, shared):
    time.sleep(payload)
    return task_id


def mc_shard(task_id, payload, shared):
    """Monte-Carlo trials [lo, hi) of one model: rebuilt from the shared state; trial seeds from trial index."""
    lo, hi = task_id
    model = rebuild_model(shared["arch"])
    model.load_state_dict(shared["state"])
    model.eval()
    batches = CachedBatches(shared["split"], 64, "cpu")
    draw = mapped_draw(map_model(model, CrossbarSpec()), DefectConfig(**shared["defects"]).build())
    return [run_trial(model, draw, batches, shared["seed"], t) for t in range(lo, hi)]


def _mc_setup():
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=4, image_size=6, precision="binary").eval()
    x = torch.rand(128, 1, 6, 6, generator=make_generator(3))
    with torch.no_grad():
        y = model(x).argmax(1)  # clean accuracy 1.0: the defects alone move it
    split = DataSplit(x, y, 1.0)
    shared = {"arch": model.arch_meta, "state": model.state_dict(), "split": split, "seed": 5,
              "defects": {"sa0_rate": 0.02, "sa1_rate": 0.05, "variation_sigma": 0.3}}
    return model, split, shared


def _shards(trials: int, size: int) -> dict:
    return {(lo, min(trials, lo + size)): None for lo in range(0, trials, size)}


# ---------------------------------------------------------------------------- in-process (no Ray needed)
def test_in_process_never_imports_ray() -> None:
    code = ("import sys; from cimnas.parallel import run_tasks\n"
            "r = run_tasks(lambda i, p, s: i * p, {1: 2, 3: 4}, workers=1, progress=False)\n"
            "assert r.results == [2, 12] and r.execution == {'engine': 'in-process', 'workers': 1}, r\n"
            "assert 'ray' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert out.returncode == 0, out.stderr


def test_ray_missing_is_one_line_error() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "from cimnas.errors import CimnasError; from cimnas.parallel import run_tasks\n"
            "try:\n  run_tasks(lambda i, p, s: 0, {0: 0}, workers=2, progress=False)\n"
            "except CimnasError as e:\n  print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [
        "Ray is not installed: pip install 'cimnas[distributed]' (or run with --workers 1)"]


def test_in_process_order_and_errors() -> None:
    seen = []
    r = run_tasks(noise_task, {i: 3 for i in range(4)}, shared={"seed": 1}, progress=False,
                  on_result=lambda i, v: seen.append(i))
    assert seen == [0, 1, 2, 3]
    assert r.results == [noise_task(i, 3, {"seed": 1}) for i in range(4)] and len(set(r.results)) == 4
    with pytest.raises(CimnasError, match="bad level"):
        run_tasks(failing_task, {i: None for i in range(4)}, progress=False)


@pytest.mark.parametrize("bad, match", [
    ({"workers": 0}, "--workers must be >= 1"),
    ({"resources": TaskResources(cpus=0)}, "task CPUs must be > 0"),
    ({"resources": TaskResources(gpus=1.5)}, "above 1 must be whole"),
    ({"ray_address": " "}, "--ray-address must name"),
    ({"retries": -1}, "retries must be >= 0"),
])
def test_bad_settings_are_one_line_errors(bad, match) -> None:
    with pytest.raises(CimnasError, match=match):
        run_tasks(noise_task, {0: 1}, shared={"seed": 0}, progress=False, **bad)


def test_parallelism_flags(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # --task-gpus is refused up front on a GPU-less host
    ap = argparse.ArgumentParser()
    add_parallel_args(ap)
    par = parallelism_from_args(ap.parse_args(["--workers", "3", "--task-gpus", "0.25"]))
    assert par == Parallelism(3, None, TaskResources(1.0, 0.25)) and not par.in_process
    assert parallelism_from_args(ap.parse_args([])).in_process


# ---------------------------------------------------------------------------- on a local Ray cluster
@pytest.mark.ray
def test_worker_count_independence_toy(ray_cluster) -> None:
    tasks = {i: 5 + i for i in range(6)}
    one = run_tasks(noise_task, tasks, shared={"seed": 9}, progress=False)
    two = run_tasks(noise_task, tasks, workers=2, shared={"seed": 9}, progress=False)
    ray1 = run_tasks(noise_task, tasks, workers=1, ray_address="auto", shared={"seed": 9}, progress=False)
    assert one.results == two.results == ray1.results and len(set(one.results)) == 6
    assert two.execution["engine"] == "ray" and two.execution["workers"] == 2
    assert two.execution["ray_version"] == ray_cluster.__version__ and ray1.execution["address"] == "auto"


@pytest.mark.ray
def test_worker_count_independence_monte_carlo(ray_cluster) -> None:
    model, split, shared = _mc_setup()
    direct = evaluate_trials(model, split, CrossbarSpec(), DefectConfig(**shared["defects"]), trials=8, seed=5,
                             batch_size=64)
    one = run_tasks(mc_shard, _shards(8, 8), shared=shared, progress=False)
    two = run_tasks(mc_shard, _shards(8, 3), workers=2, shared=shared, progress=False)
    flat = [a for shard in two.results for a in shard]
    assert one.results[0] == flat == direct.accs
    assert len(set(flat)) > 1 and min(flat) < 1.0  # the defects really drew different samples


@pytest.mark.ray
def test_cimnas_error_is_one_line(ray_cluster) -> None:
    with pytest.raises(CimnasError) as info:
        run_tasks(failing_task, {i: None for i in range(4)}, workers=2, progress=False)
    assert type(info.value) is CimnasError
    assert str(info.value) == "task 2 has a bad level: choose a level in [0, 1]"
    with pytest.raises(ZeroDivisionError):  # other errors keep their type (a bug, not bad input)
        run_tasks(zero_division_task, {0: 1, 1: 0}, workers=2, progress=False)


@pytest.mark.ray
def test_dead_worker_is_retried(ray_cluster, tmp_path) -> None:
    r = run_tasks(dying_task, {1: None, 2: None}, workers=2, shared=str(tmp_path), retries=1, progress=False)
    assert r.results == [10, 20] and (tmp_path / "died-1").exists() and (tmp_path / "died-2").exists()
    with pytest.raises(CimnasError, match="worker died and the retries are spent"):
        run_tasks(dying_task, {3: None}, workers=2, shared=str(tmp_path), retries=0, progress=False)


@pytest.mark.ray
def test_on_result_in_task_order_and_resume(ray_cluster) -> None:
    tasks = {0: 1.0, 1: 0.0, 2: 0.0, 3: 0.0}  # task 0 finishes last
    log: list[int] = []

    def append_then_die(task_id, result):
        if len(log) == 2:
            raise KeyboardInterrupt  # the run is killed after two lines reached the log
        log.append(result)

    with pytest.raises(KeyboardInterrupt):
        run_tasks(slow_first_task, tasks, workers=2, on_result=append_then_die, progress=False)
    assert log == [0, 1]  # a prefix in task order, though tasks 1-3 finished before task 0
    rest = {i: p for i, p in tasks.items() if i not in log}  # the caller's resume filter
    run_tasks(slow_first_task, rest, workers=2, on_result=lambda i, r: log.append(r), progress=False)
    assert log == [0, 1, 2, 3]


# ---------------------------------------------------------------------------- cimnas robustness --workers
@pytest.fixture
def checkpoint(tmp_path):
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8, precision="binary", seed=0, bn=True)
    cfg = OptimConfig(epochs=2, batch_size=32, optimizer="adam", lr=0.01, progress=False)
    fit(model, load_dataset("digits", seed=0, limit=500).train, cfg, device="cpu", seed=0)  # ~85 % clean
    path = tmp_path / "m.pt"
    save_model_checkpoint(path, model, {"name": "digits", "in_channels": 1, "image_size": 8, "num_classes": 10})
    return path


def _robustness(capsys, *argv) -> dict:
    code = main(["robustness", *argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.mark.ray
def test_robustness_workers_independence(ray_cluster, capsys, checkpoint) -> None:
    argv = ["--checkpoint", str(checkpoint), "--sa1", "0.02", "--sigma", "0.3", "--trials", "7",
            "--max-samples", "100"]
    one, two = _robustness(capsys, *argv), _robustness(capsys, *argv, "--workers", "2")
    assert one["models"] == two["models"] and len(set(next(iter(one["models"].values()))["accs"])) > 1
    assert one["execution"] == {"engine": "in-process", "workers": 1}
    assert two["execution"]["engine"] == "ray" and two["execution"]["workers"] == 2
    sweep = ["--checkpoint", str(checkpoint), "--sweep", "--sa0-levels", "0,0.1", "--sa1-levels", "0.2",
             "--sigma-levels", "0.5", "--trials", "3", "--max-samples", "64"]
    one, two = _robustness(capsys, *sweep), _robustness(capsys, *sweep, "--workers", "2")
    assert one["kinds"] == two["kinds"] and one["samples"] == two["samples"] == 64


# ---------------------------------------------------------------------------- uae search --workers
_TIMES = ("time_s", "train_s", "eval_s")


def _uae_cfg(**over):
    d = {"label": "toy", "progress": False, "device": "cpu",
         "space": {"n_conv": 2, "fc_hidden": 16, "channels": [4, 6], "kernels": [1, 3], "int_bits": [1, 2],
                   "frac_bits": [2, 3], "pool_after": [1]},
         "train": {"epochs": 1, "batch_size": 12, "lr": 0.01}, "eval": {"k": 2, "statistic": "mean"},
         "controller": {"batch_rollouts": 3, "lr": 0.05},
         "search": {"episodes": 7, "stop_repeats": 0, "energy_weight": 0.0}, "final": {"epochs": 1, "samples": 6}}
    for k, v in over.items():
        d[k] = {**d[k], **v}
    cfg = from_dict(UAESearchConfig, d)
    validate(cfg)
    return cfg


def _episodes(folder: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in _TIMES} for r in read_jsonl(folder / "episodes.jsonl")]


@pytest.mark.ray
def test_uae_search_workers_independence_and_resume(ray_cluster, tmp_path) -> None:
    splits = load_dataset("digits", seed=0, limit=150)
    one = run_search(_uae_cfg(), tmp_path / "one", splits=splits, figures=False)
    two = run_search(_uae_cfg(), tmp_path / "two", splits=splits, figures=False, parallel=Parallelism(2))
    log = _episodes(tmp_path / "one")
    assert len(log) == 7 and _episodes(tmp_path / "two") == log
    timeless = [{k: v for k, v in r.items() if not k.endswith(("_s", "_h"))} for r in (one, two)]
    assert timeless[0] == timeless[1] and one["mc_samples"] == 6  # final: same child, same Monte-Carlo statistics
    assert len({r["arch_key"] for r in log}) > 1 and len({r["reward"] for r in log}) > 1

    class Killed(Exception):
        pass

    def kill(i):
        if i == 5:  # mid-batch (batches 1-3, 4-6, 7): episodes 1-5 logged, 6 cancelled
            raise Killed

    with pytest.raises(Killed):
        run_search(_uae_cfg(), tmp_path / "cut", splits=splits, run_final=False, on_episode=kill,
                   parallel=Parallelism(2))
    assert len(read_jsonl(tmp_path / "cut" / "episodes.jsonl")) == 5
    run_search(_uae_cfg(), tmp_path / "cut", resume=True, splits=splits, run_final=False, parallel=Parallelism(2))
    assert _episodes(tmp_path / "cut") == log  # nothing lost, nothing logged twice
    runs = json.loads((tmp_path / "two" / "run.json").read_text())["executions"]
    assert runs[-2]["workers"] == 2 and runs[-1]["stage"] == "final" and runs[-1]["engine"] == "ray"


@pytest.mark.ray
def test_uae_search_stop_inside_a_batch(ray_cluster, tmp_path) -> None:
    cfg = _uae_cfg(space={"channels": [4], "kernels": [3], "int_bits": [2], "frac_bits": [3]},
                   search={"episodes": 20, "stop_repeats": 2})
    out = run_search(cfg, tmp_path / "r", splits=load_dataset("digits", seed=0, limit=150), run_final=False,
                     parallel=Parallelism(2))
    log = read_jsonl(tmp_path / "r" / "episodes.jsonl")
    assert len(log) == 2 and out["stop_reason"] == "repeats" and [r["cache_hit"] for r in log] == [False, True]


# ---------------------------------------------------------------------------- hawis retrain --workers
HAWIS = {"seed": 3, "device": "cpu", "data": {"name": "digits", "limit": 160, "test_limit": 60},
         "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
         "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
         "retrain": {"epochs": 2, "batch_size": 32, "lr": 0.05, "milestones": [], "widths": [8, 12],
                     "baselines": [0.5, 1], "references": ["fp"], "progress": False},
         "defects": {"trials": 2}}


@pytest.mark.ray
def test_hawis_stage_c_workers_independence(ray_cluster, tmp_path) -> None:
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(HAWIS))
    cfg = load_hawis_config(tmp_path / "cfg.yaml", [])
    run_pipeline(cfg, tmp_path / "one", stages=("retrain",))
    run_pipeline(cfg, tmp_path / "two", stages=("retrain",), parallel=Parallelism(2))

    def stage_c(name):
        res = json.loads((tmp_path / name / "stage_c.json").read_text())
        return {label: {k: v for k, v in e.items() if k != "train_s"} for label, e in res.items()}

    one = stage_c("one")
    assert list(one) == ["searched", "U-0.5x", "U-1x", "FP"] and stage_c("two") == one  # job order, same numbers
    assert len({e["test_accuracy"] for e in one.values()}) > 1 and "robustness" in one["searched"]
    a, b = (load_payload(tmp_path / n / "checkpoints" / "final_model.pt") for n in ("one", "two"))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    runs = json.loads((tmp_path / "two" / "run.json").read_text())["executions"]
    assert runs[-1]["stage"] == "retrain" and runs[-1]["workers"] == 2
