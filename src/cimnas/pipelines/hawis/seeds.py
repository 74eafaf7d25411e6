"""Stage C over several training seeds, the aligned-uniform baseline, and the one-sentence verdict.

`retrain.seeds: n` trains every stage-C model with training seeds 0..n-1. Seed 0 is the single-seed run, unchanged
(initialisation from `derive_seed(seed, "retrain-init", label)`, batch order from the run seed); seed i > 0 is job
`<label>@seed<i>` (initialisation from that label, batch order from `derive_seed(seed, "retrain-data", i)`), stored
in stage_c_seeds.json so stage_c.json keeps one entry per model. When all are trained, each model's entry gets
`seed_runs` {n, val_accuracy, test_accuracy} (lists indexed by training seed).

`retrain.aligned_baseline: true` adds the aligned-uniform net of largest energy at or below the searched net's
(`cimnas.hardware.align.aligned_uniform`), labelled AU-<width per group> like the aligned study.

`seed_comparison` ({models: {label: {test, val: {n, mean, std}}}, differences: [{baseline, test, val: {diff, low,
high} in points, detectable, verdict}], sentence}): the searched net against the aligned-uniform net and U-1x.
For each pair, Welch's 95 % interval of the difference of mean test accuracies (`cimnas.stats.diff_ci`;
validation too, for the record); the difference "exceeds the spread" when that interval excludes 0, else it is
"inside the seed spread". Nothing is chosen from these numbers: the nets are fixed before stage C (search on
search_eval, the baseline by energy).
"""

from __future__ import annotations

import math
from typing import Any

from cimnas.hardware.align import aligned_uniform
from cimnas.nn.widths import width_groups
from cimnas.stats import detectable_difference, diff_ci, summarize
from cimnas.utils.seed import derive_seed

SEEDS_FILE = "stage_c_seeds.json"
SEED_TAG = "@seed"
INSIDE, EXCEEDS = "inside the seed spread", "exceeds the spread"


def seed_label(label: str, i: int) -> str:
    """The job label of `label` trained with training seed `i` (seed 0 keeps the plain label)."""
    return label if i == 0 else f"{label}{SEED_TAG}{i}"


def split_seed(label: str) -> tuple[str, int]:
    """(model label, training seed) of a job label."""
    base, tag, i = label.rpartition(SEED_TAG)
    return (base, int(i)) if tag and i.isdigit() else (label, 0)


def with_seeds(jobs: list[tuple], n: int) -> list[tuple]:
    """Every job for seeds 0..n-1, seed 0 of every model first (a kill keeps the single-seed results)."""
    return [(seed_label(job[0], i), *job[1:]) for i in range(n) for job in jobs]


def data_seed(run_seed: int, i: int) -> int:
    """The batch-order seed of training seed `i` (seed 0: the run seed, as in a single-seed run)."""
    return run_seed if i == 0 else derive_seed(run_seed, "retrain-data", i)


def aligned_baseline(probe: Any, widths: list[int], d: int) -> dict:
    """The aligned-uniform net of largest energy at or below that of `widths` on `probe` (an ArchProbe):
    {label, widths, energy_uj, from_width_mult}."""
    au = aligned_uniform(probe.model_name, probe.spec, energy_budget=probe.energy(widths), d=d, probe=probe)
    label = "AU-" + "-".join(str(au["widths"][g[0]]) for g in width_groups(probe.base))
    return {"label": label, "widths": list(au["widths"]), "energy_uj": au["energy_uj"],
            "from_width_mult": au["width_mult"]}


def seed_runs(results: dict, n: int) -> dict[str, dict]:
    """{model label: {n, val_accuracy: [...], test_accuracy: [...]}} of the models with all n seeds trained."""
    out = {}
    for label in [k for k in results if split_seed(k)[1] == 0]:
        runs = [results.get(seed_label(label, i)) for i in range(n)]
        if all(runs):
            out[label] = {"n": n, **{k: [r[k] for r in runs] for k in ("val_accuracy", "test_accuracy")}}
    return out


def _stats(xs: list[float]) -> dict:
    return {k: summarize(xs)[k] for k in ("n", "mean", "std")}


def compare(runs: dict[str, dict], baselines: list[str], searched: str = "searched") -> dict:
    """The searched net against each baseline in `baselines` present in `runs` (`seed_runs` output): per split
    mean / std / n of each net, the difference (points) with Welch's 95 % interval, the smallest difference the
    design detects (`stats.detectable_difference`, 80 % power, pooled std), the verdict, and one sentence."""
    s = runs[searched]
    splits = {"test": "test_accuracy", "val": "val_accuracy"}  # short keys: these hold counts and points too
    out: dict = {"models": {k: {sp: _stats(v[key]) for sp, key in splits.items()}
                            for k, v in runs.items() if k == searched or k in baselines}, "differences": []}
    clauses = []
    for b in [b for b in baselines if b in runs]:
        row: dict = {"baseline": b}
        for sp, key in splits.items():
            d, lo, hi = diff_ci(s[key], runs[b][key])
            row[sp] = {"diff": 100 * d, "low": 100 * lo, "high": 100 * hi}
        na, nb = len(s["test_accuracy"]), len(runs[b]["test_accuracy"])
        t = row["test"]
        if min(na, nb) < 2:
            row["verdict"] = "one seed: no spread"
            clauses.append(f"minus {b}: {t['diff']:+.2f} points from one seed (no spread measured)")
        else:
            sds = [out["models"][k]["test"]["std"] for k in (searched, b)]
            row["detectable"] = 100 * detectable_difference(math.sqrt((sds[0] ** 2 + sds[1] ** 2) / 2), na, nb)
            row["verdict"] = EXCEEDS if t["low"] > 0 or t["high"] < 0 else INSIDE
            clauses.append(f"minus {b} ({nb} seeds): {t['diff']:+.2f} points (95 % Welch interval "
                           f"{t['low']:+.2f} to {t['high']:+.2f}), {row['verdict']}")
        out["differences"].append(row)
    n = len(s["test_accuracy"])
    out["sentence"] = (f"Test accuracy, searched net ({n} training seeds) " + "; ".join(clauses) + "."
                       if clauses else "No baseline to compare the searched net with.")
    return out
