"""`uae_study run / report`: the UAE Table 3 study as parallel resumable runs (folder layout, resume without
redoing anything, the report's numbers by hand), and the same runs with 1 and 2 Ray workers."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats as st

import cimnas.pipelines.studies.uae_study as study
from cimnas.errors import CimnasError
from cimnas.parallel import Parallelism
from cimnas.pipelines.studies.uae_study_report import report, summary
from cimnas.utils.io import read_jsonl
from cimnas.utils.seed import derive_seed

TINY = {"device": "cpu", "data": {"name": "digits", "limit": 200, "test_limit": 60},
        "space": {"n_conv": 2, "n_fc": 2, "fc_hidden": 16, "channels": [4, 6], "kernels": [1, 3], "int_bits": [1, 2],
                  "frac_bits": [2, 3], "pool_after": [1]},
        "noise": {"gaussian_sigma": 0.04, "gaussian_mode": "absolute"},
        "train": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
        "controller": {"batch_rollouts": 2, "lr": 0.05}, "search": {"episodes": 5, "stop_repeats": 0},
        "final": {"epochs": 1, "samples": 4, "retrains": 2}}
METHODS = {"quantnas": ("QuantNAS", 0), "nacim": ("NACIM", 1)}
SEEDS = (0, 1)
made_run_search = study.run_search  # the real one (the resume test patches the module's name)
TIMES = ("time_s", "train_s", "eval_s", "search_time_s", "search_time_h", "final_train_s", "final_eval_s")


def _timeless(path: Path) -> list | dict:
    if path.suffix == ".jsonl":
        return [{k: v for k, v in r.items() if k not in TIMES} for r in read_jsonl(path)]
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMES}


def _untimed(results: dict) -> dict:
    return {label: {k: v for k, v in r.items() if k not in TIMES} for label, r in results.items()}


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("configs")
    for m, (label, k) in METHODS.items():
        (d / f"{m}.yaml").write_text(yaml.safe_dump({**TINY, "label": label, "seed": 7,
                                                     "eval": {"k": k, "statistic": "mean"}}))
    return d


@pytest.fixture(scope="module")
def made(cfg_dir, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny study, in process: 2 methods x 2 seeds (3 episodes each: --set beats the YAML's 5) + cross."""
    out = tmp_path_factory.mktemp("study") / "uae"
    res = study.run_study(out, seeds=SEEDS, methods=list(METHODS), config_dir=cfg_dir,
                          overrides=["search.episodes=3"])
    return out, res


def _copy(made, tmp_path: Path) -> Path:
    shutil.copytree(made[0], tmp_path / "uae")
    return tmp_path / "uae"


def test_layout(made) -> None:
    out, res = made
    assert list(res) == [f"seed{s}/{m}" for s in SEEDS for m in METHODS] + [
        f"seed{s}/cross/{c}" for s in SEEDS for c in ("quantnas_arch_noise_aware", "nacim_arch_plain")]
    assert json.loads((out / "run.json").read_text())["kind"] == "uae-study"
    top = yaml.safe_load((out / "config.yaml").read_text())
    assert top["seeds"] == [0, 1] and list(top["methods"]) == ["quantnas", "nacim"]
    assert "seed" not in top["configs"]["nacim"] and top["configs"]["nacim"]["search"]["episodes"] == 3
    for s in SEEDS:
        for m, (label, k) in METHODS.items():
            run = out / f"seed{s}" / m
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert (cfg["seed"], cfg["label"], cfg["eval"]["k"], cfg["progress"]) == (s, label, k, False)
            assert len(read_jsonl(run / "episodes.jsonl")) == 3 and (run / "figures" / "rewards.png").is_file()
            final = json.loads((run / "final.json").read_text())
            assert final == res[f"seed{s}/{m}"] and final["episodes"] == 3
            cross = out / f"seed{s}" / "cross" / f"{m}_arch_{'noise_aware' if k == 0 else 'plain'}"
            ccfg = yaml.safe_load((cross / "config.yaml").read_text())
            assert ccfg["train"]["noise_aware"] is (k == 0) and ccfg["seed"] == s
            cf = json.loads((cross / "final.json").read_text())
            assert cf["arch_key"] == final["arch_key"] and cf["noise_aware"] is (k == 0)
            assert cf["label"] == f"{m} child, {'noise-aware' if k == 0 else 'plain'} training"
    phases = json.loads((out / "run.json").read_text())["executions"]
    assert [(p["phase"], p["engine"]) for p in phases] == [("search", "in-process"), ("cross", "in-process")]


def test_rerun_resumes_without_redoing(made, cfg_dir, tmp_path, monkeypatch) -> None:
    out = _copy(made, tmp_path)
    kw = {"seeds": SEEDS, "methods": list(METHODS), "config_dir": cfg_dir, "overrides": ["search.episodes=3"]}
    before = {p: p.read_text() for p in out.rglob("*.json*") if p.name != "run.json"}
    monkeypatch.setattr(study, "run_search", lambda *a, **k: pytest.fail("search redone"))
    monkeypatch.setattr(study, "final_evaluation", lambda *a, **k: pytest.fail("cross retrain redone"))
    assert study.run_study(out, **kw) == made[1]
    assert {p: p.read_text() for p in before} == before

    # a killed final: only that run continues (its episodes replayed, not retrained), the rest is read back
    (out / "seed1" / "nacim" / "final.json").unlink()
    calls = []
    monkeypatch.setattr(study, "run_search", lambda *a, **k: calls.append(a[1]) or made_run_search(*a, **k))
    monkeypatch.setattr("cimnas.pipelines.uae.search.evaluate_child", lambda *a, **k: pytest.fail("child retrained"))
    again = study.run_study(out, **kw)
    assert calls == [out / "seed1" / "nacim"] and _untimed(again) == _untimed(made[1])
    assert _timeless(out / "seed1" / "nacim" / "final.json") == _timeless(made[0] / "seed1" / "nacim" / "final.json")

    # the old script's layout (seed<k>/ only, no study run.json) is adopted as the study folder
    for name in ("run.json", "config.yaml", "run.log"):
        (out / name).unlink()
    monkeypatch.setattr(study, "run_search", lambda *a, **k: pytest.fail("search redone"))
    assert study.run_study(out, **kw) == again
    assert "adopted" in json.loads((out / "run.json").read_text())

    with pytest.raises(CimnasError, match=r"method quantnas's config differs .* at train.lr;"):
        study.run_study(out, **{**kw, "overrides": ["search.episodes=3", "train.lr=0.02"]})
    with pytest.raises(CimnasError, match="--seeds"):
        study.run_study(out, **{**kw, "overrides": ["seed=3"]})
    with pytest.raises(CimnasError, match="distinct seeds"):
        study.run_study(out, **{**kw, "seeds": [0, 0]})
    assert study.main(["run", str(tmp_path / "x"), "--methods", "nope", "--config-dir", str(cfg_dir)]) == 2
    assert study.main(["report", str(tmp_path / "empty")]) == 2


def test_report_matches_hand_computation(made, tmp_path) -> None:
    out = _copy(made, tmp_path)
    text = report(out)
    assert (out / "table3.md").read_text() == text
    finals = {m: [json.loads((out / f"seed{s}" / m / "final.json").read_text()) for s in SEEDS] for m in METHODS}
    rows = {line.split(" | ")[0][2:]: line for line in text.split("\n\n", 3)[2].splitlines()}  # the Table 3 rows
    for m, (label, _) in METHODS.items():
        for key in ("clean_acc", "mean", "p5"):
            v = [100 * f[key] for f in finals[m]]
            assert f"{statistics.mean(v):.2f} +- {statistics.stdev(v):.2f} (2)" in rows[label]
    sm = summary(out)
    half = st.t.ppf(0.975, 1) / 2 ** 0.5  # t interval of the mean of 2 paired differences: t(0.975, 1) s / sqrt(2)
    d = [finals["nacim"][i]["p5"] - finals["quantnas"][i]["p5"] for i in range(2)]
    got = sm["diffs"]["quantnas"]["nacim"]["p5"]
    assert got["n"] == 2 and got["diff"] == pytest.approx(statistics.mean(d))
    assert got["high"] - got["diff"] == pytest.approx(half * statistics.stdev(d))
    ci = f"{100 * got['diff']:+.2f} [{100 * got['low']:+.2f}, {100 * got['high']:+.2f}] (2)"
    assert f"| NACIM | 95%-min (p5) | {ci} | - |" in text
    assert sm["diffs"]["nacim"]["quantnas"]["p5"]["diff"] == pytest.approx(-statistics.mean(d))
    cross = [json.loads((out / f"seed{s}" / "cross" / "quantnas_arch_noise_aware" / "final.json").read_text())
             for s in SEEDS]
    mean = statistics.mean(100 * c["mean"] for c in cross)
    assert f"| noise-aware | {statistics.mean(100 * c['clean_acc'] for c in cross):.2f} / {mean:.2f} /" in text
    assert text.count("## Seed ") == 2 and f"`{finals['nacim'][1]['arch_key']}`" in text
    stats_md = (out / "search_stats.md").read_text()
    log = read_jsonl(out / "seed0" / "quantnas" / "episodes.jsonl")
    assert f"| QuantNAS | 3 | 3 | 0 | {sum(r['clean_acc'] < 0.15 for r in log)} |" in stats_md
    for s in SEEDS:
        for name in ("rewards", "clean_vs_noisy"):
            assert (out / "figures" / f"uae_study_{name}_seed{s}.png").stat().st_size > 1000


def test_retrains_and_table3_json(made, tmp_path) -> None:
    """final.retrains: each retrain has its own training seed (retrain 0 keeps the single-retrain seed), the top
    level holds their means; table3.json (also written to --json) summarises each seed's mean over retrains."""
    out = _copy(made, tmp_path)
    assert study.main(["report", str(out), "--json", str(tmp_path / "t3.json")]) == 0
    t3 = json.loads((tmp_path / "t3.json").read_text())
    assert t3 == json.loads((out / "table3.json").read_text()) and t3["seeds"] == list(SEEDS)
    assert (out / "figures" / "uae_table3.png").stat().st_size > 1000
    rows = {m["method"]: m for m in t3["methods"]}
    for m in METHODS:
        finals = [json.loads((out / f"seed{s}" / m / "final.json").read_text()) for s in SEEDS]
        for s, f in zip(SEEDS, finals, strict=True):
            seeds = [r["seed"] for r in f["retrains"]]
            assert len(seeds) == 2 and len(set(seeds)) == 2
            assert seeds[0] == derive_seed(s, "final", f["arch_key"])
            for key in ("clean_acc", "mean", "p5"):
                per = [r[key] for r in f["retrains"]]
                assert f[key] == pytest.approx(statistics.mean(per))
                assert f["retrain_std"][key] == pytest.approx(statistics.stdev(per))
                assert rows[m]["per_seed"][str(s)][key] == per
        row = rows[m]
        assert row["retrains_per_seed"] == [2, 2] and row["mc_samples"] == 4
        v = [f["mean"] for f in finals]
        assert row["mean"] == pytest.approx({"mean": statistics.mean(v), "std": statistics.stdev(v), "n": 2})
        assert row["retrain_std_mean"]["p5"] == pytest.approx(statistics.mean(f["retrain_std"]["p5"] for f in finals))
        assert row["cross"]["noise_aware_in_search"] is (METHODS[m][1] > 0)
        assert set(row["cross"]["per_seed"]) == {"0", "1"}
    assert rows["nacim"]["diff_from"]["quantnas"]["mean"]["n"] == 2 and "diff_from" in rows["quantnas"]


@pytest.mark.ray
def test_same_runs_with_two_ray_workers(ray_cluster, made, cfg_dir, tmp_path) -> None:
    two = tmp_path / "two"
    study.run_study(two, seeds=[1], methods=list(METHODS), config_dir=cfg_dir, overrides=["search.episodes=3"],
                    par=Parallelism(2))
    one = made[0]  # the in-process study
    for rel in ("quantnas/episodes.jsonl", "nacim/episodes.jsonl", "quantnas/final.json", "nacim/final.json",
                "cross/quantnas_arch_noise_aware/final.json", "cross/nacim_arch_plain/final.json"):
        assert _timeless(two / "seed1" / rel) == _timeless(one / "seed1" / rel), rel
    phases = json.loads((two / "run.json").read_text())["executions"]
    assert [(p["phase"], p["engine"], p["workers"]) for p in phases] == [("search", "ray", 2), ("cross", "ray", 2)]
