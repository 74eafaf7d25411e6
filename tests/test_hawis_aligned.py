"""The aligned-HAWIS study driver at toy scale (digits, an MLP, 2 episodes, 2 seeds): JSON contents and resume."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from cimnas.config import load_config
from cimnas.errors import CimnasError
from cimnas.pipelines.studies.hawis_aligned import AlignedStudyConfig, Study, tangent_lambda
from cimnas.stats import detectable_difference, detectable_paired, paired_ci

DATA = {"name": "digits", "limit": 200, "test_limit": 80, "seed": 0}
MODEL = {"name": "mlp", "precision": "binary", "thermometer": True, "thermometer_levels": 4,
         "options": {"hidden_sizes": [32, 32], "bn": True}}
TOY = {
    # bn off in the trained nets: limits.model_footprint runs a batch-1 forward in training mode (BN refuses it)
    "base": {"seed": 0, "device": "cpu", "data": DATA, "model": dict(MODEL, options={"hidden_sizes": [32, 32]}),
             "train": {"epochs": 1, "batch_size": 20, "optimizer": "adam", "lr": 0.005, "max_batches": 3,
                       "progress": False}},
    "hawis": {"seed": 0, "device": "cpu", "data": DATA,
              "model": {k: v for k, v in MODEL.items() if k != "precision"},
              "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
              "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2},
              "search": {"episodes": 2, "agent": "ddpg", "agent_options": {"warmup_episodes": 1, "hidden_actor": [8],
                                                                           "hidden_critic": [8], "batch_size": 2},
                         "env": {"batch_size": 32, "slimmable_epochs": 0.2, "candidate_epochs": 0.2,
                                 "bn_recal_batches": 1, "lam": 0.2}},
              "retrain": {"epochs": 1, "milestones": [], "baselines": []}},
    "arms": [{"name": "ddpg"}, {"name": "random", "overrides": ["search.agent=random", "search.agent_options={}"]}],
    "search_seeds": [0],
    "uniform": [0.5, 1.0],
    "retrain_seeds": 2,
    "lam": 0.05,
    "lambda_seeds": 2,
}


def _cfg(tmp_path, data=None, overrides=()):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data or TOY))
    return load_config(AlignedStudyConfig, p, list(overrides))


def test_tangent_lambda_by_hand():
    # accuracy 0.80 at U-1x, slope 0.05 per e-fold of energy: R is stationary at U-1x when c = err / s = 4
    pts = [(math.exp(-1), 0.75), (1.0, 0.80), (math.e, 0.85)]
    assert tangent_lambda(pts) == pytest.approx(math.exp(-4))
    with pytest.raises(CimnasError, match="does not rise"):
        tangent_lambda([(0.5, 0.8), (1.0, 0.8)])


def test_detectable_difference_matches_the_reference_design():
    # REFERENCE-FACTS: 13 seeds per arm at std 0.42 (37 at 0.75) detect about 0.5 points at 80 % power
    assert detectable_difference(0.42, 13, 13) == pytest.approx(0.5, abs=0.03)
    assert detectable_difference(0.75, 37, 37) == pytest.approx(0.5, abs=0.03)


def test_paired_ci_by_hand():
    # seeds 0..2 in both (seed 3 only in b): differences 1, 2, 3 -> mean 2, std 1, half width t_{.975,2} / sqrt(3)
    est, lo, hi, n = paired_ci({0: 1.0, 1: 3.0, 2: 5.0}, {0: 0.0, 1: 1.0, 2: 2.0, 3: 9.0})
    assert (est, n) == (2.0, 3) and est - lo == pytest.approx(hi - est)
    assert hi - est == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert paired_ci({0: 1.0, 1: 2.0}, {1: 0.0, 2: 0.0}) is None  # one common seed: no interval


def test_detectable_paired_has_its_power():
    # a paired t test at the detectable difference rejects in about 80 % of simulated designs
    import numpy as np
    from scipy import stats as st

    n, sd = 20, 1.2
    delta = detectable_paired(sd, n)
    rng = np.random.default_rng(0)
    d = rng.normal(delta, sd, size=(4000, n))
    power = float(np.mean(st.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05))
    assert 0.76 <= power <= 0.84
    assert detectable_paired(sd, 4 * n) == pytest.approx(delta / 2, rel=0.05)  # ~1 / sqrt(n)


def test_toy_study_json_and_resume(tmp_path):
    out = tmp_path / "study"
    study = Study(_cfg(tmp_path), out)
    try:
        res = study.go(publish=str(tmp_path / "pub"))
    finally:
        study.run.close()
    rows = {r["label"]: r for r in res["rows"]}
    assert {"U-0.5x", "U-1x", "ddpg-s0", "random-s0"} <= set(rows)
    # each search is followed by its chosen net's trainings and its baseline's, before the next search ends
    first = out / "runs" / "ddpg-s0" / "seed1" / "final.json"
    base0 = out / "runs" / rows["ddpg-s0"]["baseline"] / "seed1" / "final.json"
    later = out / "search" / "random" / "seed0" / "best_arch.json"
    assert first.stat().st_mtime_ns < later.stat().st_mtime_ns and base0.stat().st_mtime_ns < later.stat().st_mtime_ns
    aus = [r for r in res["rows"] if r["kind"] == "aligned-uniform"]
    assert aus and all(r["label"].startswith("AU-") for r in aus)
    # mlp 32-32 (U-1x) fills its crossbars already: it is its own aligned-uniform net, no second copy trains
    assert "baseline" not in rows["U-1x"] and not any(r["widths"] == rows["U-1x"]["widths"] for r in aus)
    for label in ("ddpg-s0", "random-s0"):
        r = rows[label]
        base = rows[r["baseline"]]
        assert base["energy_uj"] <= r["energy_uj"] + 1e-9  # the baseline never costs more
        assert r["n"] == 2 and base["n"] == 2
        for key in ("val", "test"):
            assert {"n", "mean_pct", "std_pct"} <= set(r[key])
            lo, hi = r[f"{key}_vs_baseline"]["ci95_points"]
            assert lo <= r[f"{key}_vs_baseline"]["diff_points"] <= hi
            p = r[f"{key}_vs_baseline_paired"]  # same seeds on both sides: mean of differences = difference of means
            assert p["n_pairs"] == 2 and p["diff_points"] == pytest.approx(r[f"{key}_vs_baseline"]["diff_points"])
            assert p["ci95_points"][0] <= p["diff_points"] <= p["ci95_points"][1]
        assert r["widths"] and r["energy_uj"] > 0
    assert set(res["arms"]) == {"ddpg", "random"}
    for a in res["arms"].values():  # one search seed per arm: the arm's paired difference is its net's
        net = rows[a["nets"][0]]
        assert a["val_vs_baseline_paired"]["diff_points"] == pytest.approx(net["val_vs_baseline_paired"]["diff_points"])
        assert a["verdict_on_val"] in ("above the baseline", "below the baseline", "no difference detected")
    assert res["design"]["detectable_points"] > 0 and res["lambda"] == 0.05
    assert res["proxy_drift"] == {}  # 2 episodes per search: too few to fit a drift
    assert res["design"]["detectable_points_paired"] > 0 and res["design"]["paired_diff_std_points"] >= 0
    assert (out / "figures" / "hawis_aligned.png").is_file()
    pub = json.loads((tmp_path / "pub" / "hawis_aligned_study.json").read_text())
    assert pub["rows"] == json.loads(json.dumps(res["rows"]))
    # resume after a lost model: only that one trains again, every finished one is read back as it was
    au = aus[0]["label"]
    finals = sorted(out.glob("runs/*/seed*/final.json")) + sorted(out.glob("uniform/runs/*/seed*/final.json"))
    stamps = {p: p.stat().st_mtime_ns for p in finals}
    lost = out / "runs" / au / "seed1"
    for p in sorted(lost.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    lost.rmdir()
    study = Study(_cfg(tmp_path), out)
    try:
        again = study.go()
    finally:
        study.run.close()
    assert {p: p.stat().st_mtime_ns for p in finals if p.parent != lost} == {
        p: s for p, s in stamps.items() if p.parent != lost}
    assert (lost / "final.json").is_file()
    assert [r["n"] for r in again["rows"]] == [r["n"] for r in res["rows"]]
    # --report-only: the JSON comes back from the finished models, nothing trains
    from cimnas.pipelines.studies.hawis_aligned import main

    (out / "hawis_aligned.json").unlink()
    lost2 = out / "runs" / au / "seed0"
    for p in sorted(lost2.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    lost2.rmdir()
    assert main([str(tmp_path / "study.yaml"), str(out), "--report-only"]) == 0
    rep = json.loads((out / "hawis_aligned.json").read_text())
    assert not lost2.exists() and {r["label"]: r["n"] for r in rep["rows"]}[au] == 1


def test_bad_study_configs(tmp_path):
    bad = dict(TOY, uniform=[0.5, 2.0])  # no U-1x
    with pytest.raises(CimnasError, match="U-1x"):
        _cfg(tmp_path, bad)
    with pytest.raises(CimnasError, match="folder name"):
        _cfg(tmp_path, dict(TOY, arms=[{"name": "../x"}]))


def test_study_stored_before_the_vocabulary_change_resumes(tmp_path) -> None:
    """A study folder written with the old keys (`hardware_preset`, `hawis.defects.sigma`) reads back as today's
    config, so its resume is not refused for keys that only changed name."""
    import yaml

    from cimnas.config import diff_configs, to_dict
    from cimnas.pipelines.studies.hawis_aligned import AlignedStudyConfig
    from cimnas.runs import RunFolder

    new = to_dict(AlignedStudyConfig())
    old = yaml.safe_load(yaml.safe_dump(new))
    del old["hardware"]
    old["hardware_preset"] = new["hardware"]["preset"]
    old["hawis"]["defects"]["sigma"] = old["hawis"]["defects"].pop("variation_sigma")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert diff_configs(RunFolder(tmp_path, "hawis-aligned").stored_config(AlignedStudyConfig), new) == []


def test_arm_intervals_over_training_and_over_search_seeds_by_hand():
    from cimnas.pipelines.studies.hawis_aligned_report import analyse

    def runs(vals):
        return [{"seed": i, "val_acc": v / 100, "test_acc": v / 100} for i, v in enumerate(vals)]

    base = {"label": "AU", "kind": "aligned-uniform", "widths": [8], "energy_uj": 1.0, "runs": runs([70, 72, 74])}
    nets = [{"label": f"ddpg-s{k}", "kind": "search", "widths": [9], "energy_uj": 1.1, "arm": "ddpg",
             "search_seed": k, "baseline": "AU", "runs": runs([70 + d, 72 + d, 74 + d + e])}
            for k, (d, e) in enumerate([(1.0, 0.0), (2.0, 1.5), (-0.5, 0.0)])]
    res = analyse([base, *nets], planned_n=3)
    arm = res["arms"]["ddpg"]
    # per net, paired: ddpg-s0 +1 +1 +1, ddpg-s1 +2 +2 +3.5, ddpg-s2 -0.5 -0.5 -0.5
    per_net = [1.0, 2.5, -0.5]
    by_search = arm["val_vs_baseline_by_search"]
    assert by_search["n_searches"] == 3 and by_search["diff_points"] == pytest.approx(1.0)
    half = 4.302653 * math.sqrt(sum((x - 1.0) ** 2 for x in per_net) / 2) / math.sqrt(3)
    assert by_search["ci95_points"] == pytest.approx([1.0 - half, 1.0 + half], rel=1e-5)
    # over training seeds, the search seeds held fixed: per seed the mean over nets, (2.5/3, 2.5/3, 4/3)
    paired = arm["val_vs_baseline_paired"]
    assert paired["n_pairs"] == 3 and paired["diff_points"] == pytest.approx(1.0)
    width = [iv["ci95_points"][1] - iv["ci95_points"][0] for iv in (paired, by_search)]
    assert width[0] < width[1]
    assert "over search seeds: val +1.00" in res["summary"]
    # a net without a finished baseline leaves the arm's interval out rather than averaging fewer searches
    res2 = analyse([dict(base, runs=[]), *nets], planned_n=3)
    assert "val_vs_baseline_by_search" not in res2["arms"]["ddpg"]


def test_proxy_drift_recovers_a_known_drift():
    from cimnas.pipelines.studies.hawis_aligned_report import proxy_drift

    # proxy accuracy = 70 + 0.2 per episode + 1.5 per e-fold of energy (exact): the fit gives back both slopes
    energies = [2.0, 5.0, 3.0, 8.0, 4.0, 6.0] * 4
    eps = [{"episode": i + 1, "energy_uj": q, "accuracy": (70 + 0.2 * (i + 1) + 1.5 * math.log(q / 4.0)) / 100}
           for i, q in enumerate(energies)]
    d = proxy_drift({"random-s0": eps, "short": eps[:5]}, q_ref=4.0, window=5)
    assert set(d) == {"random-s0"}  # too few episodes for a first and a last window: left out
    r = d["random-s0"]
    assert r["points_per_episode"] == pytest.approx(0.2) and r["points_per_efold_energy"] == pytest.approx(1.5)
    first = sum(100 * e["accuracy"] for e in eps[:5]) / 5
    assert r["episodes"] == 24 and r["first_5_pct"] == pytest.approx(first) and r["last_5_pct"] > r["first_5_pct"]
    assert 0 < r["corr_episode_accuracy"] <= 1
