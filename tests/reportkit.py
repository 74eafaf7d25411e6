"""Synthetic run and study folders in the exact formats the writers use (for the report tests: no training).

HAWIS: cimnas.pipelines.hawis (stage_b.py records / best_arch.json / pareto.json, stage_c.py stage_c.json and
final.json with energy_detail from the real energy model); UAE: cimnas.pipelines.uae.search `_record` and
final.py; headroom: cimnas.pipelines.studies.headroom `analyse`. Numbers are made up but consistent.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import yaml

from cimnas.hardware.crossbar import load_spec
from cimnas.hardware.energy import estimate_arch
from cimnas.pipelines.hawis.stage_b import pareto_front
from cimnas.pipelines.hawis.stage_c import DETAIL_FIELDS
from cimnas.pipelines.studies.headroom import analyse
from cimnas.runs import RUN_FORMAT
from cimnas.stats import summarize
from cimnas.utils.io import append_jsonl, write_json

BASE = [16] * 7 + [32] * 6 + [64] * 6  # resnet20's 19 searchable widths (the demo's space)
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "hawis" / "demo.yaml"


def _meta(root: Path, kind: str, config: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "run.json", {"format": RUN_FORMAT, "kind": kind, "created": "2026-01-01T00:00:00",
                                   "host": "test", "torch": "2"})
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "run.log").write_text("[00:00:00] synthetic run folder for the report tests\n")


def _energy(widths: list[int]) -> dict:
    return estimate_arch("resnet20", load_spec("mnsim-default"), widths=widths, precision="binary",
                         input_shape=(8, 8, 8), num_classes=10)


def _entry(widths: list[int], acc: float, seed: int) -> dict:
    est = _energy(widths)
    return {"widths": widths, "precision": "binary", "val_accuracy": acc + 0.004, "test_accuracy": acc,
            "train_s": 1.5, "energy_uj": est["energy_uj"], "latency_us": est["latency_us"],
            "crossbars": est["crossbars"], "biops": est["biops"], "flops": est["flops"]}


def hawis_run(root: Path, *, seed: int = 0, episodes: int = 16, aligned: bool = True,
              robustness: bool = True) -> dict:
    """A finished demo-sized HAWIS run folder; returns {final, stage_c}."""
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["seed"] = seed
    _meta(root, "hawis", cfg)
    rng = random.Random(seed)
    records = []
    for e in range(episodes):
        widths = [max(8, 4 * round(b * rng.uniform(0.5, 2.0) / 4)) for b in BASE]
        en = _energy(widths)["energy_uj"]
        acc = 0.6 + 0.1 * rng.random()
        records.append({"episode": e + 1, "widths": widths, "reward": acc - 0.2 * en, "accuracy": acc, "energy_uj": en,
                        "reward_accuracy": acc, "robust": None, "wall_s": 1.0, "times_s": {"finetune": 0.5}})
        append_jsonl(root / "episodes.jsonl", records[-1])
    best = max(records, key=lambda r: (r["reward"], -r["episode"]))
    write_json(root / "best_arch.json", {k: best[k] for k in ("widths", "episode", "reward", "accuracy", "energy_uj")})
    write_json(root / "pareto.json", [{k: r[k] for k in ("episode", "widths", "reward", "accuracy", "energy_uj")}
                                      for r in pareto_front(records)])
    searched = _entry(best["widths"], 0.9123 + 0.01 * seed, seed)
    est = _energy(best["widths"])
    searched["energy_detail"] = {"components_uj": dict(est["energy_components_uj"]),
                                 "layers": [{k: r[k] for k in DETAIL_FIELDS} for r in est["layers"]]}
    if robustness:
        s = summarize([0.85 + 0.01 * rng.random() for _ in range(10)])
        searched["robustness"] = {"sa0_rate": 0.0175, "sa1_rate": 0.0904, "variation_sigma": 0.1, "trials": s["n"],
                                  **{k: s[k] for k in ("mean", "std", "min", "p5", "median", "max")}}
    stage_c = {"searched": searched,
               "U-1x": _entry(BASE, 0.8811 + 0.01 * seed, seed),
               "U-2x": _entry([2 * b for b in BASE], 0.9345 + 0.01 * seed, seed)}
    if aligned:
        stage_c["aligned-1x"] = _entry([16] * 7 + [28] * 6 + [56] * 6, 0.9012 + 0.01 * seed, seed)
    write_json(root / "stage_c.json", stage_c)
    final = dict(searched, source="search",
                 search_metrics={k: best[k] for k in ("episode", "reward", "accuracy", "energy_uj")},
                 uniform_energy_uj={"U-1x": stage_c["U-1x"]["energy_uj"], "U-2x": stage_c["U-2x"]["energy_uj"]},
                 uniform_widths={"U-1x": BASE, "U-2x": [2 * b for b in BASE]})
    write_json(root / "final.json", final)
    return {"final": final, "stage_c": stage_c}


def uae_run(root: Path, *, episodes: int = 8) -> dict:
    """A finished UAE search run folder; returns final.json's content."""
    _meta(root, "uae-search", {"label": "UAE-M demo", "seed": 0, "eval": {"k": 5, "statistic": "mean"}})
    rng = random.Random(1)
    log = []
    for i in range(episodes):
        hit = i > 0 and i % 4 == 0
        clean = log[-1]["clean_acc"] if hit else 0.5 + 0.4 * rng.random()
        accs = [clean - 0.05 * rng.random() for _ in range(5)]
        key = log[-1]["arch_key"] if hit else f"{8 + i}-3-1-2|16-3-1-3"
        rec = {"episode": i + 1, "arch_key": key, "arch": {"layers": []}, "decisions": [i], "reward": sum(accs) / 5,
               "clean_acc": clean, "noisy": summarize(accs), "noisy_accs": accs, "energy_uj": 0.4, "params": 2000,
               "train_s": 1.0, "eval_s": 0.1, "time_s": 0.0 if hit else 1.1, "cache_hit": hit}
        log.append(rec)
        append_jsonl(root / "episodes.jsonl", rec)
    best = max(log, key=lambda r: r["reward"])
    write_json(root / "best_arch.json", {"label": "UAE-M demo", "episodes": episodes, "arch_key": best["arch_key"]})
    s = summarize([0.8712 - 0.01 * rng.random() for _ in range(20)])
    final = {"label": "UAE-M demo", "k": 5, "statistic": "mean", "noise_aware": True, "gaussian_sigma": 0.04,
             "gaussian_mode": "absolute", "arch_key": best["arch_key"], "arch": {"layers": []}, "clean_acc": 0.9034,
             **{k: s[k] for k in ("mean", "std", "min", "p5", "median", "max")}, "mc_samples": s["n"],
             "search_time_s": 9.0, "search_time_h": 0.0025, "episodes": episodes, "unique_children": episodes - 1,
             "stop_reason": "episode_limit", "energy_uj": 0.4, "final_train_s": 2.0, "final_eval_s": 1.0}
    write_json(root / "final.json", final)
    return final


def headroom_study(root: Path) -> dict:
    """A headroom study folder (headroom.json as `analyse` writes it; the per-model train runs are left out)."""
    _meta(root, "study-headroom", {"uniform": [1.0, 2.0], "uniform_seeds": 3, "allocation_seeds": 3})
    rng = random.Random(2)
    jobs = []
    for label, kind, mult, acc in (("U-1x", "uniform", 1.0, 0.88), ("U-2x", "uniform", 2.0, 0.93),
                                   ("wide-last", "allocation", 1.4, 0.91)):
        widths = [int(b * mult) for b in BASE]
        jobs.append({"label": label, "kind": kind, "widths": widths, "energy_uj": _energy(widths)["energy_uj"],
                     "runs": [{"seed": s, "test_acc": acc + 0.01 * rng.random(), "val_acc": acc} for s in range(3)]})
    result = analyse(jobs)
    write_json(root / "headroom.json", result)
    return result


def aligned_study(root: Path) -> dict:
    """An aligned-HAWIS study folder (kind study-hawis-aligned): hawis_aligned.json as issue 20's
    `hawis_aligned_report.analyse` writes it (accuracies in percent, differences in points, Welch intervals)."""
    from cimnas.stats import diff_ci

    _meta(root, "study-hawis-aligned", {"retrain_seeds": 4})
    rng = random.Random(3)
    nets = {"U-1x": ("uniform", BASE, 88.0, None), "U-2x": ("uniform", [2 * b for b in BASE], 93.0, None),
            "AU-16-28-56": ("aligned-uniform", [16] * 7 + [28] * 6 + [56] * 6, 90.0, None),
            "ddpg-s0": ("search", [20] * 7 + [32] * 6 + [48] * 6, 90.5, "AU-16-28-56")}
    vals = {k: {"val": [v[2] + rng.random() for _ in range(4)], "test": [v[2] - 0.3 + rng.random() for _ in range(4)]}
            for k, v in nets.items()}
    rows = []
    for label, (kind, widths, _, base) in nets.items():
        row = {"label": label, "kind": kind, "widths": widths, "energy_uj": _energy(widths)["energy_uj"], "n": 4}
        if base:
            row["baseline"] = base
        for name in ("val", "test"):
            s = summarize(vals[label][name])
            row[name] = {"n": s["n"], "mean_pct": s["mean"], "std_pct": s["std"]}
            if base:
                est, lo, hi = diff_ci(vals[label][name], vals[base][name])
                row[f"{name}_vs_baseline"] = {"diff_points": est, "ci95_points": [lo, hi]}
                if name == "test":  # seed-matched differences (seed k = list index k), by hand
                    d = [x - y for x, y in zip(vals[label][name], vals[base][name], strict=True)]
                    half = 3.182446 * statistics.stdev(d) / 2.0  # t_{.975, 3} sd / sqrt(4)
                    md = statistics.mean(d)
                    row["test_vs_baseline_paired"] = {"diff_points": md, "n_pairs": 4,
                                                      "ci95_points": [md - half, md + half]}
        rows.append(row)
    search = rows[-1]
    arms = {"ddpg": {"nets": ["ddpg-s0"], "aligned_uniform_nets": [], "val_vs_baseline": search["val_vs_baseline"],
                     "test_vs_baseline": search["test_vs_baseline"], "verdict_on_val": "no difference detected",
                     "test_vs_baseline_by_search": {"diff_points": 0.7, "ci95_points": [-3.1, 4.5], "n_searches": 3}}}
    result = {"rows": rows, "arms": arms, "design": {"planned_seeds_per_net": 4, "pooled_seed_std_points": 0.3,
                                                     "detectable_points": 0.61, "test": "two-sided Welch t, 5 %, "
                                                                                        "power 80 %"},
              "summary": "", "lambda": 0.3, "values": vals}
    write_json(root / "hawis_aligned.json", {k: v for k, v in result.items() if k != "values"})
    return result
