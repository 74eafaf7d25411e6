"""Table II-style markdown table of a HAWIS run: energy and accuracy of FP, 8-bit, U-kx, aligned uniform, searched."""

from __future__ import annotations

from pathlib import Path

from cimnas.utils.io import read_json


def _fmt(v: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def _robust(entry: dict | None) -> float | None:
    """Mean accuracy under the run's defects (stage C's Monte-Carlo trials), if measured."""
    r = (entry or {}).get("robustness")
    return r.get("mean") if isinstance(r, dict) else None


def table_rows(run_dir: str | Path) -> list[dict]:
    """Rows {model, energy_uj, accuracy, robust_accuracy} in Table II order; missing numbers are None."""
    run = Path(run_dir)
    stage_c = read_json(run / "stage_c.json") if (run / "stage_c.json").is_file() else {}
    final = read_json(run / "final.json") if (run / "final.json").is_file() else {}
    rows = []
    for label in ("FP", "8-bit"):
        e = stage_c.get(label)
        if e:
            rows.append({"model": label, "energy_uj": None if label == "FP" else e.get("energy_uj"),
                         "accuracy": e.get("test_accuracy"), "robust_accuracy": _robust(e)})
    uniform = dict(final.get("uniform_energy_uj", {}))
    for label, e in stage_c.items():  # trained U-kx baselines (possibly fractional k)
        if label.startswith("U-") and label not in uniform:
            uniform[label] = e.get("energy_uj")
    for label in sorted(uniform, key=lambda s: float(s[2:-1])):
        trained = stage_c.get(label, {})
        rows.append({"model": label, "energy_uj": uniform[label], "accuracy": trained.get("test_accuracy"),
                     "robust_accuracy": _robust(trained)})
    for label, e in stage_c.items():  # the aligned-uniform baseline(s) (`retrain.aligned_baseline`, cimnas align)
        if label.startswith("AU-"):
            rows.append({"model": f"{label} (aligned uniform)", "energy_uj": e.get("energy_uj"),
                         "accuracy": e.get("test_accuracy"), "robust_accuracy": _robust(e)})
    for label, e in stage_c.items():
        if label.startswith("pareto-"):
            rows.append({"model": f"HAWIS {label}", "energy_uj": e.get("energy_uj"),
                         "accuracy": e.get("test_accuracy"), "robust_accuracy": _robust(e)})
    if final:
        rows.append({"model": "HAWIS (searched)", "energy_uj": final.get("energy_uj"),
                     "accuracy": final.get("test_accuracy"), "robust_accuracy": _robust(final)})
    return rows


def table_markdown(run_dir: str | Path) -> str:
    """The Table II-style table as markdown (accuracy in %, energy in uJ per inference)."""
    lines = ["| Model | Energy (uJ) | Test acc. (%) | Under defects (%) |", "|---|---|---|---|"]
    for r in table_rows(run_dir):
        energy = "-" if r["energy_uj"] is None else f"{r['energy_uj']:.3g}"
        lines.append(f"| {r['model']} | {energy} | {_fmt(r['accuracy'], 100.0)} | "
                     f"{_fmt(r['robust_accuracy'], 100.0)} |")
    lines.append("")
    lines.append("Energy: analytical crossbar model (cimnas.hardware.energy) for one inference; '-' = not "
                 "trained / not applicable (FP has no crossbar mapping, as in HAWIS Table II). Under defects: "
                 "mean test accuracy over stage C's Monte-Carlo trials of the config's `defects` (the same draws "
                 "for every model).")
    return "\n".join(lines) + "\n"
