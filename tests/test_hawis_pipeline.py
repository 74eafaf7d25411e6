"""HAWIS pipeline: run folder, resume after a kill (same episodes), torn JSONL, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cimnas.errors import CimnasError
from cimnas.pipelines.hawis import best_record, load_hawis_config, pareto_front, run_pipeline

TINY = {
    "seed": 3,
    "device": "cpu",
    "data": {"name": "digits", "limit": 160, "test_limit": 60},
    "model": {"name": "mlp", "options": {"hidden_sizes": [16, 16], "bn": True}},
    "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
    "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2},
    "search": {"episodes": 4, "agent": "ddpg",
               "agent_options": {"warmup_episodes": 2, "hidden_actor": [8], "hidden_critic": [8], "batch_size": 4},
               "env": {"batch_size": 32, "slimmable_epochs": 0.3, "candidate_epochs": 0.3, "bn_recal_batches": 1,
                       "lam": 0.2}},
    "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "baselines": [1]},
    "defects": {"trials": 2},
}


def _cfg(tmp_path: Path, overrides: list[str] | None = None, data: dict | None = None):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data or TINY))
    return load_hawis_config(p, overrides or [])


KEYS = ("episode", "widths", "reward", "accuracy", "energy_uj")


def _episodes(run: Path) -> list[tuple]:
    lines = (run / "episodes.jsonl").read_text().splitlines()
    return [tuple(json.dumps(json.loads(line)[k]) for k in KEYS) for line in lines]


def test_full_pipeline_writes_run_folder(tmp_path):
    out = tmp_path / "run"
    summary = run_pipeline(_cfg(tmp_path), out)
    for name in ("config.yaml", "episodes.jsonl", "best_arch.json", "pareto.json", "final.json", "stage_c.json",
                 "table.md", "figures/fig1_pareto.png", "figures/fig4_channels_per_episode.png",
                 "figures/fig5_channels_per_layer.png", "checkpoints/supernet.pt", "checkpoints/search_state.pt",
                 "checkpoints/final_model.pt"):
        assert (out / name).is_file(), name
    recs = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(recs) == 4
    assert set(recs[0]["times_s"]) == {"slimmable_ft", "candidate_ft", "bn_recal", "eval", "energy", "agent_update"}
    best = json.loads((out / "best_arch.json").read_text())
    assert best["reward"] == max(r["reward"] for r in recs)
    assert all(w % 4 == 0 for w in best["widths"])
    final = summary["final"]
    assert final["widths"] == best["widths"] and final["flops"] == 0 and final["biops"] > 0
    assert 0 <= final["test_accuracy"] <= 1 and final["energy_uj"] > 0
    assert set(final["uniform_energy_uj"]) == {"U-1x", "U-2x"}
    assert final["uniform_energy_uj"]["U-2x"] > final["uniform_energy_uj"]["U-1x"]
    assert "U-1x" in (out / "table.md").read_text()


def test_resume_after_kill_and_torn_line_repeats_the_same_episodes(tmp_path):
    stages = ("pretrain", "search")
    ref = tmp_path / "ref"
    run_pipeline(_cfg(tmp_path), ref, stages=stages)
    killed = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_pipeline(_cfg(tmp_path), killed, stages=stages, stop_after=2)
    assert len(_episodes(killed)) == 2
    with open(killed / "episodes.jsonl", "a") as f:  # a line torn by a kill mid-write
        f.write('{"episode": 2, "widths": [1')
    run_pipeline(_cfg(tmp_path), killed, stages=stages, resume=True)
    assert _episodes(killed) == _episodes(ref)


def test_resume_with_other_config_names_keys_and_keeps_files(tmp_path):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path), out, stages=("pretrain",))
    before = (out / "config.yaml").read_text()
    with pytest.raises(CimnasError, match=r"search\.env\.lam.*seed|seed.*search\.env\.lam"):
        run_pipeline(_cfg(tmp_path, ["seed=4", "search.env.lam=0.3"]), out, resume=True)
    with pytest.raises(CimnasError, match="--resume"):
        run_pipeline(_cfg(tmp_path), out)
    assert (out / "config.yaml").read_text() == before


def test_resume_of_a_folder_written_before_a_config_key_existed(tmp_path):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path), out, stages=("pretrain",))
    stored = yaml.safe_load((out / "config.yaml").read_text())
    del stored["pretrain"]["inplace_distill"]  # as written by a version without the key
    (out / "config.yaml").write_text(yaml.safe_dump(stored))
    run_pipeline(_cfg(tmp_path), out, stages=("pretrain",), resume=True)  # default value: same config
    with pytest.raises(CimnasError, match=r"pretrain\.inplace_distill"):
        run_pipeline(_cfg(tmp_path, ["pretrain.inplace_distill=true"]), out, stages=("pretrain",), resume=True)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path), out, stages=("pretrain",))
    ck = out / "checkpoints" / "supernet.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(CimnasError, match="corrupt"):
        run_pipeline(_cfg(tmp_path), out, stages=("pretrain",), resume=True)
    assert ck.stat().st_size == 100  # nothing overwritten


@pytest.mark.parametrize("override, match", [
    ("space.r_min=3.0", "r_min"),
    ("space.d=0", "d"),
    ("search.env.lam=0", "lambda"),
    ("search.env.lam=-1", "lambda"),
])
def test_bad_config_values(tmp_path, override, match):
    with pytest.raises(CimnasError, match=match):
        _cfg(tmp_path, [override])


def test_retrain_widths_must_be_multiples_of_d(tmp_path):
    with pytest.raises(CimnasError, match="multiple"):
        run_pipeline(_cfg(tmp_path, ["retrain.widths=[16,18]"]), tmp_path / "run", stages=("retrain",))


def test_pareto_front_and_best_record():
    recs = [{"episode": 0, "widths": [4], "reward": -0.3, "accuracy": 0.8, "energy_uj": 2.0},
            {"episode": 1, "widths": [8], "reward": -0.2, "accuracy": 0.9, "energy_uj": 3.0},
            {"episode": 2, "widths": [12], "reward": -0.5, "accuracy": 0.85, "energy_uj": 4.0},  # dominated
            {"episode": 3, "widths": [8], "reward": -0.2, "accuracy": 0.9, "energy_uj": 3.0}]
    assert [r["episode"] for r in pareto_front(recs)] == [0, 1]
    assert best_record(recs)["episode"] == 1
