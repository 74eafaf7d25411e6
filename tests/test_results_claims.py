"""The committed aligned-study JSON holds what issue 20 asks of it, and the README's headline row quotes it."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _aligned() -> dict:
    return json.loads((ROOT / "docs" / "results" / "hawis_aligned_study.json").read_text())


def test_aligned_study_json_has_every_field_per_net_and_arm():
    d = _aligned()
    assert (ROOT / "docs" / "results" / "hawis_aligned_study.png").is_file()
    searched = [r for r in d["rows"] if r["kind"] == "search"]
    assert {r["arm"] for r in searched} == {"ddpg", "random", "ddpg-mc"}
    for arm in ("ddpg", "random"):  # at least 3 search seeds each
        assert len({r["search_seed"] for r in searched if r["arm"] == arm}) >= 3
    for r in d["rows"]:
        assert r["label"] and r["widths"] and r["energy_uj"] > 0 and r["n"] >= 20  # every net: 20 training seeds
        for k in ("val", "test"):
            assert r[k]["n"] == r["n"] and r[k]["std_pct"] > 0 and 50 < r[k]["mean_pct"] < 100
    by = {r["label"]: r for r in d["rows"]}
    for r in searched:
        base = by[r["baseline"]]
        assert base["energy_uj"] <= r["energy_uj"]  # the aligned-uniform net of largest energy at or below its own
        for k in ("val", "test"):
            iv = r[f"{k}_vs_baseline_paired"]
            assert iv["ci95_points"][0] <= iv["diff_points"] <= iv["ci95_points"][1]
    assert d["design"]["detectable_points_paired"] > 0
    for e in d["arms"].values():
        assert e["verdict_on_val"] in ("above the baseline", "below the baseline", "no difference detected")


def test_readme_quotes_the_aligned_study_json():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| HAWIS against the aligned-uniform baseline"))
    quoted = re.findall(r"[-+]\d+\.\d+ \[[-+]\d+\.\d+, [-+]\d+\.\d+\]", row)
    assert len(quoted) >= 6
    summary = _aligned()["summary"]
    assert [q for q in quoted if q not in summary] == []
    detect = re.search(r"detect (\d+\.\d+) points \(paired\)", row).group(1)
    assert f"{_aligned()['design']['detectable_points_paired']:.2f}" == detect
