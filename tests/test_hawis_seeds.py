"""HAWIS stage C over several training seeds with the aligned-uniform baseline (retrain.seeds, aligned_baseline):
the seed-0 results equal a single-seed run's, the baseline is the aligned-uniform net of largest energy at or below
the searched net's, and the one-sentence verdict matches Welch's interval computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from cimnas.hardware.align import aligned_uniform
from cimnas.pipelines.hawis import run_pipeline
from cimnas.pipelines.hawis.seeds import EXCEEDS, INSIDE, compare, split_seed, with_seeds
from test_hawis_pipeline import _cfg

WIDTHS = ["retrain.widths=[16,8]", "retrain.baselines=[1]", "retrain.max_batches=3"]


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's 95 % interval of mean(a) - mean(b), written out (Welch-Satterthwaite degrees of freedom)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    d, half = np.mean(a) - np.mean(b), st.t.ppf(0.975, dof) * math.sqrt(va + vb)
    return d, d - half, d + half


def test_seeds_and_aligned_baseline_in_stage_c(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_pipeline(_cfg(tmp_path, WIDTHS), one, stages=("retrain",))
    final = run_pipeline(_cfg(tmp_path, [*WIDTHS, "retrain.seeds=2", "retrain.aligned_baseline=true"]), two,
                         stages=("retrain", "report"))["final"]
    sc1 = json.loads((one / "stage_c.json").read_text())
    sc2 = json.loads((two / "stage_c.json").read_text())
    extra = json.loads((two / "stage_c_seeds.json").read_text())
    au = final["aligned_uniform"]
    assert not (one / "stage_c_seeds.json").exists() and "seed_comparison" not in json.loads(
        (one / "final.json").read_text())
    # seed 0 of every model is the single-seed run's model, number for number
    for label in sc1:
        assert {k: v for k, v in sc2[label].items() if k not in ("train_s", "seed_runs")} == {
            k: v for k, v in sc1[label].items() if k != "train_s"}
    assert set(sc2) == {"searched", "U-1x", au["label"]} and set(extra) == {f"{k}@seed1" for k in sc2}
    for label, v in sc2.items():
        assert v["seed_runs"]["test_accuracy"] == [v["test_accuracy"], extra[f"{label}@seed1"]["test_accuracy"]]
    assert extra["searched@seed1"]["test_accuracy"] != sc2["searched"]["test_accuracy"] or \
        extra["searched@seed1"]["val_accuracy"] != sc2["searched"]["val_accuracy"]  # another training seed
    # the baseline: aligned-uniform, largest energy at or below the searched net's (energies as stage C measured)
    assert au["widths"] == sc2[au["label"]]["widths"] and len(set(au["widths"])) == 1  # mlp: one width group
    assert sc2[au["label"]]["energy_uj"] <= sc2["searched"]["energy_uj"]
    assert au["energy_uj"] == pytest.approx(sc2[au["label"]]["energy_uj"], rel=1e-9)
    # the verdict sentence: Welch's interval by hand, for each baseline
    comp = final["seed_comparison"]
    s = sc2["searched"]["seed_runs"]["test_accuracy"]
    for row in comp["differences"]:
        d, lo, hi = (100 * x for x in _welch(s, sc2[row["baseline"]]["seed_runs"]["test_accuracy"]))
        assert (row["test"]["diff"], row["test"]["low"], row["test"]["high"]) == \
            pytest.approx((d, lo, hi))
        verdict = EXCEEDS if lo > 0 or hi < 0 else INSIDE
        assert row["verdict"] == verdict
        assert f"minus {row['baseline']} (2 seeds): {d:+.2f} points (95 % Welch interval {lo:+.2f} to {hi:+.2f}), " \
               f"{verdict}" in comp["sentence"]
    assert [r["baseline"] for r in comp["differences"]] == [au["label"], "U-1x"]
    assert comp["sentence"].endswith(".") and ". " not in comp["sentence"]  # one sentence
    table = (two / "table.md").read_text()
    assert comp["sentence"] in table and "| HAWIS (searched) |" in table
    au_row = next(x for x in table.splitlines() if x.startswith(f"| {au['label']} (aligned uniform) |"))
    assert au_row.split("|")[3].strip() == f"{100 * sc2[au['label']]['test_accuracy']:.2f}"  # the top table too
    # the HTML report: the verdict, each net's seeds as mean / std / n, the same html-escaped numbers
    from cimnas.reports.html import write_report

    html = write_report([two], tmp_path / "report.html")[0].read_text()
    assert html.count(comp["sentence"]) >= 2  # the run's facts and the "Seed spread" section
    sd = 100 * float(np.std(s, ddof=1))
    assert f"<td>searched</td><td>test</td><td>{100 * np.mean(s):.2f}%</td><td>{sd:.2f}%</td><td>2</td>" in html


def test_compare_verdicts_by_hand():
    a = [0.90, 0.92, 0.94]
    runs = {"searched": {"test_accuracy": a, "val_accuracy": a},
            "far": {"test_accuracy": [0.80, 0.81, 0.79], "val_accuracy": [0.8, 0.8, 0.81]},
            "near": {"test_accuracy": [0.91, 0.93, 0.90], "val_accuracy": [0.9, 0.9, 0.91]},
            "one": {"test_accuracy": [0.5], "val_accuracy": [0.5]}}
    out = compare(runs, ["far", "near", "one", "absent"])
    rows = {r["baseline"]: r for r in out["differences"]}
    assert set(rows) == {"far", "near", "one"}
    for name in ("far", "near"):
        d, lo, hi = (100 * x for x in _welch(a, runs[name]["test_accuracy"]))
        assert rows[name]["test"]["low"] == pytest.approx(lo)
    assert rows["far"]["verdict"] == EXCEEDS and rows["near"]["verdict"] == INSIDE  # 12 points apart vs 0.7
    assert rows["one"]["verdict"] == "one seed: no spread" and "detectable" not in rows["one"]
    assert out["sentence"].startswith("Test accuracy, searched net (3 training seeds) minus far (3 seeds)")


def test_seed_labels_round_trip():
    jobs = with_seeds([("searched", [8], "binary"), ("U-1x", [16], "binary")], 3)
    assert [j[0] for j in jobs] == ["searched", "U-1x", "searched@seed1", "U-1x@seed1", "searched@seed2",
                                    "U-1x@seed2"]
    assert [split_seed(j[0]) for j in jobs[:3]] == [("searched", 0), ("U-1x", 0), ("searched", 1)]
    assert split_seed("AU-16-28-56") == ("AU-16-28-56", 0)


def test_aligned_uniform_of_a_resnet_is_under_its_budget():
    """The helper stage C calls, on a ResNet-20 with a non-uniform width vector: at or below the budget, the
    same net as `aligned_uniform`, labelled by its width per group."""
    from cimnas.hardware.align import ArchProbe
    from cimnas.hardware.crossbar import load_spec
    from cimnas.pipelines.hawis.seeds import aligned_baseline

    probe = ArchProbe("resnet20", load_spec("mnsim-default", []), in_channels=1, num_classes=10, image_size=8,
                      precision="binary")
    widths = [4 * round(b * (1.5 if i % 2 else 1.0) / 4) for i, b in enumerate(probe.base)]
    au = aligned_baseline(probe, widths, 4)
    ref = aligned_uniform("resnet20", probe.spec, energy_budget=probe.energy(widths), probe=probe)
    assert au["energy_uj"] <= probe.energy(widths) and au["widths"] == ref["widths"]
    groups = [[i for i, b in enumerate(probe.base) if b == g] for g in sorted(set(probe.base))]  # 16, 32, 64
    assert au["label"] == "AU-" + "-".join(str(au["widths"][g[0]]) for g in groups)
    assert all(len({au["widths"][i] for i in g}) == 1 for g in groups)  # uniform within each group
