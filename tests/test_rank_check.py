"""`cimnas hawis rank-check` and `cimnas.stats.rank_correlation`: statistics against scipy and hand computations,
the command end to end on a tiny digits / ResNet-20 super-net, stand-alone values from a synthetic headroom folder,
order independence of the proxy, resume per architecture, bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as st
import yaml

from cimnas.cli import main
from cimnas.errors import CimnasError
from cimnas.pipelines.hawis import load_hawis_config, run_pipeline
from cimnas.stats import fisher_ci, rank_correlation

BASE = [16] * 7 + [32] * 6 + [64] * 6  # ResNet-20's 1x widths
TINY = {
    "seed": 3, "device": "cpu",
    "data": {"name": "digits", "limit": 200, "test_limit": 60},
    "model": {"name": "resnet20", "thermometer_levels": 4},
    "space": {"r_min": 0.5, "r_max": 1.0, "d": 4},
    "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2, "milestones": [], "progress": False},
    "search": {"episodes": 1, "env": {"batch_size": 32, "bn_recal_batches": 1, "candidate_epochs": 0.1,
                                      "max_batches": 1}},
    "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "max_batches": 2, "progress": False},
}


def _uniform(k: float) -> list[int]:
    return [max(4, round(b * k / 4) * 4) for b in BASE]


ARCHS = [{"name": "U-0.5x", "widths": _uniform(0.5)}, {"name": "U-0.75x", "widths": _uniform(0.75)},
         {"name": "U-1x", "widths": _uniform(1.0)}, {"name": "wide-last", "widths": [8] * 7 + [24] * 6 + [64] * 6},
         {"name": "wide-first", "widths": [16] * 7 + [24] * 6 + [28] * 6}]


# ---------------------------------------------------------------------------- statistics
def test_rank_correlation_hand_computed_and_scipy():
    one_swap = rank_correlation([1, 2, 3, 4], [1, 3, 2, 4], seed=0)
    assert one_swap["kendall_tau"] == pytest.approx((5 - 1) / 6)  # 5 concordant, 1 discordant pair
    assert one_swap["spearman_rho"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # sum d^2 = 2
    perfect = rank_correlation(np.arange(12.0), np.arange(12.0) ** 3, seed=1)
    assert perfect["kendall_tau"] == pytest.approx(1) and perfect["spearman_rho"] == pytest.approx(1)
    assert perfect["kendall_ci"] == pytest.approx([1, 1]) and perfect["spearman_ci"] == pytest.approx([1, 1])
    reverse = rank_correlation(np.arange(8.0), -np.arange(8.0), seed=1)
    assert reverse["kendall_tau"] == pytest.approx(-1) and reverse["spearman_ci"] == pytest.approx([-1, -1])
    rng = np.random.default_rng(5)
    x = rng.normal(size=15)
    y = np.round(x + rng.normal(size=15), 0)  # ties on y: tau-b
    r = rank_correlation(x, y, seed=2, resamples=500)
    assert r["kendall_tau"] == pytest.approx(st.kendalltau(x, y)[0])
    assert r["spearman_rho"] == pytest.approx(st.spearmanr(x, y)[0])
    assert r["kendall_ci"][0] <= r["kendall_tau"] <= r["kendall_ci"][1]
    assert r["spearman_ci"][0] <= r["spearman_rho"] <= r["spearman_ci"][1]
    # the vectorised bootstrap statistics are scipy's on the same resamples
    idx = np.random.default_rng(2).integers(0, 15, size=(500, 15))
    taus = [st.kendalltau(x[i], y[i])[0] for i in idx]
    assert r["kendall_ci"] == pytest.approx(list(np.percentile(taus, [2.5, 97.5])))
    assert r == rank_correlation(x, y, seed=2, resamples=500)  # seeded
    assert r["kendall_ci"] != rank_correlation(x, y, seed=3, resamples=500)["kendall_ci"]


def test_bootstrap_interval_separates_correlated_from_independent_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    assert rank_correlation(x, x + 0.5 * rng.normal(size=40), seed=0)["kendall_ci"][0] > 0.3
    r = rank_correlation(x, rng.normal(size=40), seed=0)
    assert r["kendall_ci"][0] < 0 < r["kendall_ci"][1] and r["spearman_ci"][0] < 0 < r["spearman_ci"][1]


def test_fisher_interval_by_hand_and_degenerate_inputs():
    z, half = math.atanh(0.8), 1.959964 * math.sqrt(1.06 / 9)
    assert fisher_ci(0.8, 12, 1.06, 3) == pytest.approx((math.tanh(z - half), math.tanh(z + half)), abs=1e-6)
    assert fisher_ci(0.5, 4, 0.437, 4) is None
    flat = rank_correlation([1, 2, 3], [5, 5, 5], seed=0)
    assert flat["kendall_tau"] is None and "constant" in flat["note"]
    for a, b, msg in (([1, 2], [1, 2], "at least 3"), ([1, 2, 3], [1, 2], "paired"),
                      ([1, 2, float("nan")], [1, 2, 3], "finite")):
        with pytest.raises(CimnasError, match=msg):
            rank_correlation(a, b, seed=0)


# ---------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def hawis_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rank")
    (root / "cfg.yaml").write_text(yaml.safe_dump(TINY))
    run_pipeline(load_hawis_config(root / "cfg.yaml"), root / "run", stages=("pretrain",))
    return root / "run"


def _archs(tmp_path: Path, archs, name: str = "archs.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(archs) if name.endswith(".yaml") else json.dumps(archs))
    return str(p)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def test_end_to_end_stats_order_independence_and_resume(hawis_run, tmp_path, capsys):
    out = tmp_path / "rc"
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS[:4]), "--out", str(out),
                 "--resamples", "300"]) == 0
    assert "Kendall's tau-b" in capsys.readouterr().out
    for name in ("rank_check.json", "rank_check.md", "figures/rank_check.png", "proxy.jsonl", "standalone.jsonl"):
        assert (out / name).is_file(), name
    res = json.loads((out / "rank_check.json").read_text())
    rows = res["rows"]
    assert [r["name"] for r in rows] == [a["name"] for a in ARCHS[:4]]
    assert [r["uniform"] for r in rows] == [True, True, True, False] and res["n_uniform"] == 3
    assert all(r["in_space"] for r in rows)
    assert all(r["standalone_source"] == "trained here" for r in rows)
    px, sa = [r["proxy_accuracy"] for r in rows], [r["standalone_val_accuracy"] for r in rows]
    if np.ptp(px) > 0 and np.ptp(sa) > 0:
        assert res["stats"]["kendall_tau"] == pytest.approx(st.kendalltau(px, sa)[0])
        assert res["stats"]["spearman_rho"] == pytest.approx(st.spearmanr(px, sa)[0])
    assert sorted(r["proxy_rank"] for r in rows) == [1, 2, 3, 4]
    energy = [r["energy_uj"] for r in rows]
    if np.ptp(sa) > 0:
        assert res["energy_stats"]["kendall_tau"] == pytest.approx(st.kendalltau(energy, sa)[0])
    assert res["stage_a"]["epochs"] == 1 and res["stage_a"]["wall_s"] is not None
    # the proxy never changes the super-net: the same architecture scores the same in any order and company
    rev = tmp_path / "rc_rev"
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS[3::-1][:3], "rev.json"),
                 "--out", str(rev), "--resamples", "50"]) == 0
    again = {r["name"]: r["proxy_accuracy"] for r in json.loads((rev / "rank_check.json").read_text())["rows"]}
    assert again == {r["name"]: r["proxy_accuracy"] for r in rows if r["name"] in again}
    # resume: one more architecture, only it is measured and trained
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS[:4]), "--out",
                 str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS), "--out", str(out),
                 "--resamples", "300", "--resume"]) == 0
    assert len(_lines(out / "proxy.jsonl")) == 5 and len(_lines(out / "standalone.jsonl")) == 5
    res2 = json.loads((out / "rank_check.json").read_text())
    def unranked(rs):
        return [{k: v for k, v in r.items() if not k.endswith("_rank")} for r in rs]

    assert res2["stats"]["n"] == 5 and unranked(res2["rows"][:4]) == unranked(rows)
    assert not res2["rows"][4]["in_space"]  # 28 channels: below r_min = 0.5 of the 64-channel layers
    assert "outside the space" in (out / "rank_check.md").read_text()
    # an earlier rank-check's stand-alone models serve another one (e.g. of another stage-A variant)
    reuse = tmp_path / "rc_reuse"
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS), "--standalone", str(out),
                 "--out", str(reuse), "--resamples", "50"]) == 0
    assert not (reuse / "standalone.jsonl").exists()
    got = json.loads((reuse / "rank_check.json").read_text())["rows"]
    assert [r["standalone_val_accuracy"] for r in got] == [r["standalone_val_accuracy"] for r in res2["rows"]]
    # a different proxy budget is not a resume of the same check
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS), "--out", str(out),
                 "--resume", "--set", "search.env.bn_recal_batches=2"]) == 2
    assert "env.bn_recal_batches" in capsys.readouterr().err


def test_candidate_ft_restores_the_super_net(hawis_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, archs in ((a, ARCHS[:3]), (b, ARCHS[2::-1])):
        assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, archs, f"{out.name}.yaml"),
                     "--out", str(out), "--candidate-ft", "--standalone", str(_headroom(tmp_path, out.name))]) == 0
    pa = {r["name"]: r["proxy_accuracy"] for r in _lines(a / "proxy.jsonl")}
    pb = {r["name"]: r["proxy_accuracy"] for r in _lines(b / "proxy.jsonl")}
    assert pa == pb
    assert json.loads((a / "rank_check.json").read_text())["proxy"]["candidate_epochs"] == 0.1


def _headroom(tmp_path: Path, name: str = "head", data: str = "digits") -> Path:
    """A synthetic headroom study folder: U-0.5x, U-0.75x, wide-first with known val accuracies; U-1x's row
    has no val_acc, its seeds' final.json files hold it."""
    root = tmp_path / f"headroom_{name}"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"base": {"data": {"name": data},
                                                               "model": {"name": "resnet20"}}}))
    vals = {"U-0.5x": [0.70, 0.74], "U-0.75x": [0.80], "wide-first": [0.60, 0.62, 0.64]}
    rows = [{"label": a["name"], "kind": "x", "widths": a["widths"], "energy_uj": 1.0,
             **({"val_acc": {"values": vals[a["name"]]}} if a["name"] in vals else {})}
            for a in ARCHS if a["name"] != "wide-last"]
    for seed, v in ((0, 0.9), (1, 0.8)):
        f = root / "runs" / "U-1x" / f"seed{seed}" / "final.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"test_acc": 0.5, "val_acc": v}))
    (root / "headroom.json").write_text(json.dumps({"rows": rows}))
    return root


def test_standalone_values_from_a_headroom_folder(hawis_run, tmp_path):
    out = tmp_path / "rc"
    head = _headroom(tmp_path)
    assert main(["hawis", "rank-check", str(hawis_run), "--standalone", str(head), "--out", str(out)]) == 0
    res = json.loads((out / "rank_check.json").read_text())
    assert {r["name"]: r["standalone_val_accuracy"] for r in res["rows"]} == pytest.approx(
        {"U-0.5x": 0.72, "U-0.75x": 0.80, "U-1x": 0.85, "wide-first": 0.62})
    assert [r["standalone_seeds"] for r in res["rows"]] == [2, 1, 2, 3]
    assert not (out / "standalone.jsonl").exists()  # nothing trained
    assert res["rows"][2]["standalone_rank"] == 1 and res["rows"][3]["standalone_rank"] == 4
    # --archs with --standalone: known widths are looked up, the others trained here
    out2 = tmp_path / "rc2"
    assert main(["hawis", "rank-check", str(hawis_run), "--standalone", str(head), "--archs",
                 _archs(tmp_path, ARCHS), "--out", str(out2)]) == 0
    assert [r["name"] for r in _lines(out2 / "standalone.jsonl")] == ["wide-last"]
    with pytest.raises(CimnasError, match="same data"):
        from cimnas.pipelines.hawis.rank_check import read_headroom

        read_headroom(_headroom(tmp_path, "cifar", data="cifar10"), load_hawis_config(hawis_run / "config.yaml"))


def test_several_standalone_folders_and_the_split_check(hawis_run, tmp_path):
    from cimnas.pipelines.hawis.rank_check import read_headroom

    head = _headroom(tmp_path)  # every architecture but wide-last
    extra = tmp_path / "extra"  # an earlier rank-check that trained wide-last (same data, model, seed)
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS[3:4] + ARCHS[:2]),
                 "--out", str(extra), "--standalone", str(head)]) == 0
    assert [r["name"] for r in _lines(extra / "standalone.jsonl")] == ["wide-last"]
    out = tmp_path / "rc_two"
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", _archs(tmp_path, ARCHS), "--out", str(out),
                 "--standalone", str(head), "--standalone", str(extra)]) == 0
    assert not (out / "standalone.jsonl").exists()  # all five known: nothing trained
    rows = {r["name"]: r for r in json.loads((out / "rank_check.json").read_text())["rows"]}
    wide_last = _lines(extra / "standalone.jsonl")[0]["val_accuracy"]
    assert rows["wide-last"]["standalone_val_accuracy"] == pytest.approx(wide_last)
    assert rows["U-0.5x"]["standalone_val_accuracy"] == pytest.approx(0.72)  # the first folder's values
    cfg = load_hawis_config(hawis_run / "config.yaml")
    for key, bad in (("limit", 999), ("seed", 7)):
        other = _headroom(tmp_path, f"split_{key}")
        stored = yaml.safe_load((other / "config.yaml").read_text())
        stored["base"]["data"][key] = bad
        (other / "config.yaml").write_text(yaml.safe_dump(stored))
        with pytest.raises(CimnasError, match="validation split or input coding differs"):
            read_headroom(other, cfg)
    same = _headroom(tmp_path, "same_split")
    stored = yaml.safe_load((same / "config.yaml").read_text())
    stored["base"]["data"].update(limit=cfg.data.limit, seed=cfg.data.resolved_seed(cfg.seed))
    stored["base"]["model"]["thermometer_levels"] = cfg.model.thermometer_levels
    (same / "config.yaml").write_text(yaml.safe_dump(stored))
    assert len(read_headroom(same, cfg)) == 4


def test_proxy_only_then_resume(hawis_run, tmp_path):
    out = tmp_path / "rc_proxy"
    archs = _archs(tmp_path, ARCHS[:3], name="three.yaml")
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", archs, "--out", str(out), "--proxy-only"]) == 0
    assert [r["name"] for r in _lines(out / "proxy.jsonl")] == [a["name"] for a in ARCHS[:3]]
    assert not (out / "standalone.jsonl").exists() and not (out / "rank_check.json").exists()
    first = _lines(out / "proxy.jsonl")
    assert main(["hawis", "rank-check", str(hawis_run), "--archs", archs, "--out", str(out), "--resume"]) == 0
    assert _lines(out / "proxy.jsonl") == first  # proxies kept, not recomputed
    assert len(_lines(out / "standalone.jsonl")) == 3 and (out / "rank_check.json").is_file()


def test_bad_input_is_one_line_exit_2(hawis_run, tmp_path, capsys):
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    for f in ("config.yaml", "space.json", "run.json"):
        shutil.copy(hawis_run / f, no_ckpt / f)
    good = _archs(tmp_path, ARCHS[:3])
    short = _archs(tmp_path, [{"name": "short", "widths": [16] * 18}], "short.yaml")
    odd = _archs(tmp_path, [{"name": "odd", "widths": [18] + [16] * 18}], "odd.yaml")
    wide = _archs(tmp_path, [{"name": "wide", "widths": [24] + [16] * 18}], "wide.yaml")
    empty = _archs(tmp_path, [], "empty.json")
    dup = _archs(tmp_path, [ARCHS[0], ARCHS[0]], "dup.yaml")
    extra = _archs(tmp_path, [{**ARCHS[0], "lr": 1}], "extra.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x01\x02")
    run = str(hawis_run)
    cases = [([str(no_ckpt), "--archs", good], "supernet.pt"),
             ([run, "--archs", short], "18 entries"),
             ([run, "--archs", odd], "multiple of space.d=4"),
             ([run, "--archs", wide], "exceeds the super-net"),
             ([run, "--archs", empty], "no architectures"),
             ([run, "--archs", _archs(tmp_path, ARCHS[:2], "two.yaml")], "at least 3"),
             ([run, "--archs", dup], "appears twice"),
             ([run, "--archs", extra], "exactly name and widths"),
             ([run, "--archs", str(tmp_path / "bin.yaml")], "not a text|binary"),
             ([run, "--archs", str(tmp_path / "missing.yaml")], "not found"),
             ([run], "--archs FILE or --standalone"),
             ([run, "--archs", good, "--set", "pretrain.epochs=3"], "only search.env"),
             ([run, "--standalone", str(tmp_path)], "no headroom.json"),
             ([str(tmp_path / "nothing"), "--archs", good], "not a HAWIS run folder")]
    for i, (argv, msg) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["hawis", "rank-check", *argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("cimnas: error:") and len(err.splitlines()) == 1, err
        assert any(m in err for m in msg.split("|")), (msg, err)
        assert not out.exists(), argv  # refused before the output folder is made
