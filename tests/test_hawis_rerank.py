"""HAWIS stage B's final re-rank (search.rerank_top): off = today's best_arch.json; on = the K best unique candidates
re-scored on one (the final) super-net state, clamped K, bad K, resume after a kill during the re-rank, stage C
follows the re-ranked choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cimnas.data import load_dataset
from cimnas.errors import CimnasError
from cimnas.nn.supernet import SuperNet
from cimnas.pipelines.hawis import best_record, run_pipeline
from cimnas.pipelines.hawis.stage_b import rerank_candidates
from cimnas.reports.summary import show_text
from cimnas.search.env import EnvConfig, HawisEnv
from cimnas.search.spaces import WidthSpace
from cimnas.utils.seed import derive_seed
from test_hawis_pipeline import _cfg, _episodes

SEARCH = ("pretrain", "search")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _scores(recs: list[dict]) -> list[tuple]:
    """The computed fields of rerank.jsonl (times_s is wall time)."""
    return [tuple(json.dumps(r[k]) for k in r if k != "times_s") for r in recs]


def _digest(net: SuperNet) -> list[torch.Tensor]:
    return [v.detach().clone() for v in net.state_dict().values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture
def scored(monkeypatch):
    """Spy on HawisEnv.run_episode: (finetune_supernet, widths, seed, state before, state after) per call."""
    calls: list[tuple] = []
    real = HawisEnv.run_episode

    def spy(self, widths, seed, *, finetune_supernet=True):
        before = _digest(self.supernet)
        res = real(self, widths, seed, finetune_supernet=finetune_supernet)
        calls.append((finetune_supernet, list(widths), seed, before, _digest(self.supernet)))
        return res

    monkeypatch.setattr(HawisEnv, "run_episode", spy)
    return calls


@pytest.mark.parametrize("candidate_ft", [True, False])
def test_scoring_without_phase_a_leaves_the_super_net_unchanged_and_repeats(candidate_ft):
    splits = load_dataset("digits", seed=0, limit=160, test_limit=60)
    torch.manual_seed(0)
    net = SuperNet.build("mlp", in_channels=1, num_classes=10, image_size=8, r_min=0.5, r_max=2.0, d=4,
                         hidden_sizes=[16, 16], bn=True)
    space = WidthSpace(tuple(net.base_widths), r_min=0.5, r_max=2.0, d=4)
    cfg = EnvConfig(batch_size=32, slimmable_epochs=0.5, candidate_epochs=0.5, bn_recal_batches=2, lam=0.5,
                    candidate_ft=candidate_ft)
    env = HawisEnv(net, space, splits, cfg, lambda m: {"energy_uj": float(sum(m.widths))}, 32.0)
    env.run_episode([16, 16], seed=0)  # train the super-net a little (phase a) so BN stats are not the defaults
    before = _digest(net)
    r1 = env.run_episode([8, 24], seed=7, finetune_supernet=False)
    assert _same(before, _digest(net))  # BN running stats included, also without phase (b)
    env.run_episode([32, 8], seed=3, finetune_supernet=False)  # another candidate in between
    r2 = env.run_episode([8, 24], seed=7, finetune_supernet=False)
    assert (r1.accuracy, r1.reward, r1.energy_uj) == (r2.accuracy, r2.reward, r2.energy_uj)
    assert _same(before, _digest(net)) and r1.times_s["slimmable_ft"] < 0.05


def test_off_by_default_is_todays_best_arch(tmp_path):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path), out, stages=SEARCH)
    best = json.loads((out / "best_arch.json").read_text())
    rec = best_record(_lines(out / "episodes.jsonl"))
    assert best == {k: rec[k] for k in ("widths", "episode", "reward", "accuracy", "energy_uj")}
    assert not (out / "rerank.jsonl").exists() and "re-rank" not in (out / "run.log").read_text()


def test_rerank_scores_every_candidate_on_the_final_super_net(tmp_path, scored):
    off, on = tmp_path / "off", tmp_path / "on"
    run_pipeline(_cfg(tmp_path), off, stages=SEARCH)
    run_pipeline(_cfg(tmp_path, ["search.rerank_top=3"]), on, stages=SEARCH)
    assert _episodes(on) == _episodes(off)  # the search itself is the same
    eps = _lines(on / "episodes.jsonl")
    rr = _lines(on / "rerank.jsonl")
    cands = rerank_candidates(eps, 3)
    assert [r["rank"] for r in rr] == [1, 2, 3] and len({tuple(r["widths"]) for r in rr}) == 3
    assert [(r["widths"], r["episode"], r["search_reward"]) for r in rr] == [
        (c["widths"], c["episode"], c["reward"]) for c in cands]
    assert cands[0]["reward"] == max(e["reward"] for e in eps)
    # the re-rank calls: no phase (a), seeds (seed, "rerank", rank), one super-net state for all, left as it was
    calls = scored[-3:]
    assert [c[0] for c in scored] == [True] * 8 + [False] * 3  # off run's 4 episodes, on run's 4, then 3 scores
    assert [c[2] for c in calls] == [derive_seed(3, "rerank", r) for r in (1, 2, 3)]
    assert all(_same(calls[0][3], c[3]) and _same(c[3], c[4]) for c in calls)
    best = json.loads((on / "best_arch.json").read_text())
    top = max(rr, key=lambda r: (r["reward"], -r["rank"]))
    assert best["reranked"] is True and best["widths"] == top["widths"] and best["reward"] == top["reward"]
    assert best["episode"] == top["episode"] and best["search_reward"] == eps[top["episode"] - 1]["reward"]
    assert f"chosen episode {top['episode']} (search rank {top['rank']})" in (on / "run.log").read_text()
    text, _ = show_text(str(on), use_rich=False)  # cimnas show reads the new best_arch.json fields
    assert f"episode {top['episode']}" in text and "re-ranked on the final super-net" in text
    assert "re-ranked" not in show_text(str(off), use_rich=False)[0]


def test_duplicate_widths_count_once_and_k_is_clamped():
    recs = [{"episode": i + 1, "widths": w, "reward": r, "accuracy": 0.5}
            for i, (w, r) in enumerate([([4, 4], -1.0), ([8, 8], -0.5), ([4, 4], -0.2), ([8, 8], -0.5)])]
    got = rerank_candidates(recs, 10)
    assert [(c["episode"], c["widths"]) for c in got] == [(3, [4, 4]), (2, [8, 8])]  # best episode of each vector
    assert rerank_candidates(recs, 1) == [recs[2]]


def test_k_above_the_unique_candidates_is_clamped(tmp_path):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path, ["search.rerank_top=50"]), out, stages=SEARCH)
    unique = {tuple(e["widths"]) for e in _lines(out / "episodes.jsonl")}
    assert len(_lines(out / "rerank.jsonl")) == len(unique)
    assert f"only {len(unique)} unique widths" in (out / "run.log").read_text()


@pytest.mark.parametrize("value", ["-1", "1.5", "true"])
def test_bad_k_is_a_one_line_error(tmp_path, value):
    with pytest.raises(CimnasError, match="rerank_top") as e:
        _cfg(tmp_path, [f"search.rerank_top={value}"])
    assert "\n" not in str(e.value)


def test_resume_after_a_kill_during_the_rerank_gives_the_same_result(tmp_path, monkeypatch, scored):
    args = ["search.rerank_top=3"]
    ref = tmp_path / "ref"
    run_pipeline(_cfg(tmp_path, args), ref, stages=SEARCH)
    killed = tmp_path / "killed"

    def kill_after_two(self, widths, seed, *, finetune_supernet=True):
        if not finetune_supernet and sum(not c[0] for c in scored) >= 5:  # ref's 3, then 2 of this run
            raise RuntimeError("simulated kill during the re-rank")
        return spy(self, widths, seed, finetune_supernet=finetune_supernet)

    spy = HawisEnv.run_episode
    monkeypatch.setattr(HawisEnv, "run_episode", kill_after_two)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_pipeline(_cfg(tmp_path, args), killed, stages=SEARCH)
    assert len(_lines(killed / "rerank.jsonl")) == 2 and not (killed / "best_arch.json").exists()
    with open(killed / "rerank.jsonl", "a") as f:  # a line torn by the kill
        f.write('{"rank": 3, "widths": [1')
    monkeypatch.setattr(HawisEnv, "run_episode", spy)
    n = len(scored)
    run_pipeline(_cfg(tmp_path, args), killed, stages=SEARCH, resume=True)
    assert [c[0] for c in scored[n:]] == [False]  # only the missing candidate is scored again
    assert _scores(_lines(killed / "rerank.jsonl")) == _scores(_lines(ref / "rerank.jsonl"))
    assert (killed / "best_arch.json").read_text() == (ref / "best_arch.json").read_text()


def test_rerank_turned_on_and_off_on_resume_and_stage_c_retrains_the_choice(tmp_path):
    out = tmp_path / "run"
    run_pipeline(_cfg(tmp_path), out, stages=SEARCH)
    plain = (out / "best_arch.json").read_text()
    run_pipeline(_cfg(tmp_path, ["search.rerank_top=2"]), out, stages=SEARCH, resume=True)  # before stage C: allowed
    best = json.loads((out / "best_arch.json").read_text())
    assert best["reranked"] and len(_lines(out / "rerank.jsonl")) == 2
    summary = run_pipeline(_cfg(tmp_path, ["search.rerank_top=2", "retrain.baselines=[]"]), out,
                           stages=("retrain",), resume=True)
    assert summary["final"]["widths"] == best["widths"]
    assert summary["final"]["search_metrics"]["search_reward"] == best["search_reward"]
    other = tmp_path / "other"
    run_pipeline(_cfg(tmp_path, ["search.rerank_top=2"]), other, stages=SEARCH)
    run_pipeline(_cfg(tmp_path), other, stages=SEARCH, resume=True)  # off again: today's choice, no stale re-rank
    assert (other / "best_arch.json").read_text() == plain and _lines(other / "rerank.jsonl") == []
