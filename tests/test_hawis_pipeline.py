"""HAWIS pipeline: run folder, resume after a kill (same episodes), torn JSONL, thermometer input in every stage,
stage C's validation split, resume rules, bad input and hostile checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cimnas.errors import CimnasError
from cimnas.nn.refactor import ThermometerInput
from cimnas.pipelines.hawis import best_record, load_hawis_config, pareto_front, run_pipeline
from cimnas.runs import load_payload
from cimnas.utils.io import load_checkpoint, save_checkpoint

TINY = {
    "seed": 3,
    "device": "cpu",
    "data": {"name": "digits", "limit": 160, "test_limit": 60},
    "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
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
    ("search.env.lam=inf", "finite"),
    ("search.env.lam=1000", "lam must be <="),
    ("space.r_max=inf", "finite"),
    ("space.r_max=17", "r_max must be <= 16"),
    ("search.env.slimmable_lr=nan", "finite"),
    ("search.agent_options.warmup_episodes=-1", "warmup_episodes"),
    ("search.agent_options.hidden_actor=[0]", "hidden_actor"),
    ("search.agent_options.no_such_key=1", "search.agent_options.no_such_key"),
    ("search.agent=nope", "nope"),
    ("model.precision=float", "binary"),
    ("model.width_mult=2", "retrain.widths"),
    ("model.options.refactor.thermometer=true", "model.thermometer"),
    ("model.options.refactor.binarize_frist=false", "binarize_frist"),
    ("retrain.baselines=[0.5,0.5]", "twice"),
    ("retrain.baselines=[20]", "baselines"),
    ("retrain.regularizer=ridge", "regularizer"),
])
def test_bad_config_values(tmp_path, override, match):
    with pytest.raises(CimnasError, match=match):
        _cfg(tmp_path, [override])


def test_bad_values_are_refused_before_the_run_folder_exists(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(CimnasError, match="agent_options"):
        run_pipeline(_cfg(tmp_path, ["search.agent_options.batch_size=0"]), out)
    assert not out.exists()
    monkeypatch.setenv("CIMNAS_MAX_PARAMS", "5000")  # the mlp super-net has ~14k parameters at r_max 2
    with pytest.raises(CimnasError, match=r"super-net .* parameters .* CIMNAS_MAX_PARAMS") as e:
        run_pipeline(_cfg(tmp_path), out)
    assert len(str(e.value).splitlines()) == 1
    assert not (out / "checkpoints").exists()  # nothing trained
    monkeypatch.setenv("CIMNAS_MAX_PARAMS", "lots")
    with pytest.raises(CimnasError, match="CIMNAS_MAX_PARAMS"):
        run_pipeline(_cfg(tmp_path), tmp_path / "run2")
    monkeypatch.delenv("CIMNAS_MAX_PARAMS")
    huge = dict(TINY, model={"name": "mlp", "options": {"hidden_sizes": [10 ** 6, 10 ** 6]}})
    with pytest.raises(CimnasError, match=r"1x float model would have 1,0\d\d,\d{3},\d{3},\d{3} parameters"):
        run_pipeline(_cfg(tmp_path, data=huge), tmp_path / "run3")  # counted on the meta device: no memory


def test_thermometer_input_reaches_every_stage_and_references_keep_float_input(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tmp_path, ["search.episodes=2", "retrain.references=[fp,8bit]", "retrain.baselines=[]",
                          "model.options.refactor={binarize_last: false}", "defects.trials=0"])
    run_pipeline(cfg, out, stages=("pretrain", "search", "retrain"))
    for name in ("supernet.pt", "search_state.pt", "final_model.pt"):  # stage A, stage B, stage C
        arch = load_payload(out / "checkpoints" / name, {"arch": dict})["arch"]
        assert arch["precision"] == "binary"
        assert arch["refactor"]["thermometer"] is True and arch["refactor"]["thermometer_levels"] == 4
        assert arch["refactor"]["binarize_last"] is False
    from cimnas.nn.models import rebuild_model

    model = rebuild_model(load_payload(out / "checkpoints" / "final_model.pt", {"arch": dict})["arch"])
    first = model.fcs[0]
    assert isinstance(first.input_quantizer, ThermometerInput) and first.input_quantizer.levels == 4
    assert first.in_features == 64 * 4  # 8x8 digits, 4 planes per pixel
    sc = json.loads((out / "stage_c.json").read_text())
    assert sc["FP"]["precision"] == "float" and sc["8-bit"]["precision"] == "kbit"
    assert sc["FP"]["flops"] > 0
    # binarize_last: false reached stage C: only the classifier (last width -> 10 classes) is float
    assert sc["searched"]["flops"] == sc["searched"]["widths"][-1] * 10


def test_stage_c_trains_on_search_train_and_reads_test_once(tmp_path, monkeypatch):
    import cimnas.pipelines.hawis.stage_c as stage_c

    calls = {"fit": [], "evaluate": []}
    real_fit, real_eval = stage_c.fit, stage_c.evaluate
    monkeypatch.setattr(stage_c, "fit", lambda model, split, *a, **k: calls["fit"].append(split)
                        or real_fit(model, split, *a, **k))
    monkeypatch.setattr(stage_c, "evaluate", lambda model, split, **k: calls["evaluate"].append(split)
                        or real_eval(model, split, **k))
    out = tmp_path / "run"
    final = run_pipeline(_cfg(tmp_path, ["retrain.widths=[16,8]", "retrain.baselines=[1,0.5]"]), out,
                         stages=("retrain",))["final"]
    from cimnas.data import load_dataset

    splits = load_dataset("digits", seed=3, limit=160, test_limit=60)
    assert len(calls["fit"]) == 3 and all(len(s) == len(splits.search_train) for s in calls["fit"])
    sizes = [len(s) for s in calls["evaluate"]]
    assert sizes == [len(splits.search_eval), len(splits.test)] * 3  # val, then test once per model
    sc = json.loads((out / "stage_c.json").read_text())
    assert set(sc) == {"searched", "U-1x", "U-0.5x"} and sc["U-0.5x"]["widths"] == [8, 8]
    for v in sc.values():
        assert 0 <= v["val_accuracy"] <= 1 and 0 <= v["test_accuracy"] <= 1
    assert final["val_accuracy"] == sc["searched"]["val_accuracy"] and final["widths"] == [16, 8]


def test_resume_rules(tmp_path):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path, ["search.episodes=2"]), out, stages=("pretrain", "search"))
    with pytest.raises(CimnasError, match=r"search\.episodes=1: 2 episodes are already done"):
        run_pipeline(_cfg(tmp_path, ["search.episodes=1"]), out, stages=("search",), resume=True)
    # before stage C, retrain.* and more episodes may change; config.yaml then records what was used
    later = ["search.episodes=3", "retrain.epochs=2", "retrain.baselines=[]"]
    run_pipeline(_cfg(tmp_path, later), out, resume=True, stages=("search", "retrain"))
    assert len(_episodes(out)) == 3
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["retrain"]["epochs"] == 2 and stored["search"]["episodes"] == 3
    with pytest.raises(CimnasError, match=r"stage C has started, so retrain\.epochs"):
        run_pipeline(_cfg(tmp_path, later[:1] + ["retrain.epochs=3"] + later[2:]), out, resume=True,
                     stages=("retrain",))
    run_pipeline(_cfg(tmp_path, later + ["report.fig4_layer=0", "retrain.progress=false"]), out, resume=True,
                 stages=("report",))


def test_pretrain_from_run_reuses_the_super_net(tmp_path):
    src = tmp_path / "pre"
    run_pipeline(_cfg(tmp_path), src, stages=("pretrain",))
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path, [f"pretrain.from_run={src}"]), out, stages=("pretrain",))
    a = load_checkpoint(src / "checkpoints" / "supernet.pt")["state_dict"]
    b = load_checkpoint(out / "checkpoints" / "supernet.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CimnasError, match="not found"):
        run_pipeline(_cfg(tmp_path, [f"pretrain.from_run={tmp_path / 'nowhere'}"]), tmp_path / "x",
                     stages=("pretrain",))


@pytest.mark.parametrize("name, edit, match", [
    ("supernet_pretrain.pt", lambda ck: ck.pop("optimizer"), "has no 'optimizer'"),
    ("supernet_pretrain.pt", lambda ck: ck.update(epoch="1"), "'epoch' is a str, not a int"),
    ("search_state.pt", lambda ck: ck.update(records="[{"), "incomplete or corrupt"),
    ("search_state.pt", lambda ck: ck.update(format="cimnas-hawis-v1"), "format"),
])
def test_hostile_checkpoints_are_one_line_errors(tmp_path, name, edit, match):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path, ["search.episodes=1"]), out, stages=("pretrain", "search"))
    if name == "supernet_pretrain.pt":
        (out / "checkpoints" / "supernet.pt").unlink()  # stage A not finished: it resumes from the epoch one
    ck = load_checkpoint(out / "checkpoints" / name)
    edit(ck)
    save_checkpoint(out / "checkpoints" / name, ck)
    with pytest.raises(CimnasError, match=match) as e:
        run_pipeline(_cfg(tmp_path, ["search.episodes=2"]), out, stages=("pretrain", "search"), resume=True)
    assert len(str(e.value).splitlines()) == 1


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
