"""HAWIS figures from a run folder (Agg backend): Fig. 1-, 4- and 5-style plots, plus table.md.

- `fig1_pareto.png`: energy vs accuracy in two panels: the searched candidates' proxy (held-out super-net)
  accuracy and their Pareto front; the test accuracy of the nets trained in stage C (searched, U-kx, aligned-
  uniform, Pareto points) with seed error bars (untrained U-kx: their energy as a vertical marker).
- `fig4_channels_per_episode.png`: channels of one layer (report.fig4_layer) per episode.
- `fig5_channels_per_layer.png`: channels per layer, searched vs the U-kx nearest to it in energy (and
  report.compare_uniform when that is another one).

Reads the run folder's files only; imports no model, search or pipeline code.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cimnas.config import read_yaml  # noqa: E402
from cimnas.errors import CimnasError  # noqa: E402
from cimnas.reports.figures import finish, readable_axes  # noqa: E402
from cimnas.reports.hawis_seeds import accuracy_panels, seeds_markdown  # noqa: E402
from cimnas.reports.tables import table_markdown  # noqa: E402
from cimnas.utils.io import atomic_write_bytes, read_json, read_jsonl, require_run_kind  # noqa: E402


def _load(run: Path) -> dict:
    if not (run / "config.yaml").is_file():
        raise CimnasError(f"{run} is not a HAWIS run folder (no config.yaml)")
    # another run's folder (train, UAE) would be misread and get a figures/ folder it never had
    require_run_kind(run, "hawis", "HAWIS", "cimnas hawis run")
    cfg = read_yaml(run / "config.yaml")  # bounded, safe YAML (a report only reads the run folder)
    data = {
        "cfg": cfg,
        "episodes": read_jsonl(run / "episodes.jsonl"),
        "pareto": read_json(run / "pareto.json") if (run / "pareto.json").is_file() else [],
        "final": read_json(run / "final.json") if (run / "final.json").is_file() else {},
        "stage_c": read_json(run / "stage_c.json") if (run / "stage_c.json").is_file() else {},
        "space": read_json(run / "space.json") if (run / "space.json").is_file() else {},
    }
    for name, typ in (("pareto", list), ("final", dict), ("stage_c", dict), ("space", dict)):
        if not isinstance(data[name], typ):
            raise CimnasError(f"{run}/{name}.json holds a {type(data[name]).__name__}, not a {typ.__name__}; "
                              "the run folder was edited: restore the file or rerun its stage")
    return data


def fig1_pareto(data: dict, path: Path) -> None:
    """Two panels, never one axis for both kinds of accuracy: left, the search's proxy (super-net, held-out)
    accuracy of every candidate and their Pareto front; right, the test accuracy of the nets trained in stage C
    (mean ± std over training seeds), with the energy of untrained U-kx as vertical markers."""
    eps, final, stage_c = data["episodes"], data["final"], data["stage_c"]
    fig = accuracy_panels(plt, eps, data["pareto"], stage_c, final, "energy per inference (uJ)")
    finish(fig, fig.axes[1], path, xlabel="energy per inference (uJ)", ylabel="test accuracy (%): trained nets",
           title="Stage C (test accuracy, mean ± std over seeds)", title_size=9, legend=False)


def fig4_channels(data: dict, path: Path) -> None:
    eps = data["episodes"]
    layer = int(data["cfg"].get("report", {}).get("fig4_layer", 1))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if eps:
        layer = min(max(layer, 0), len(eps[0]["widths"]) - 1)
        ax.plot([e["episode"] for e in eps], [e["widths"][layer] for e in eps], "-", lw=0.8, c="#e0a000")
    ax.grid(alpha=0.3)
    readable_axes(ax, integer_x=True)
    finish(fig, ax, path, xlabel="episode", ylabel=f"#output channels, layer {layer + 1}",
           title="Channels of one layer per episode (HAWIS Fig. 4 style)", legend=False)


def nearest_uniform(final: dict) -> str | None:
    """The U-kx label (with stored widths) whose energy is nearest the searched model's, on a log scale."""
    import math

    energies, widths = final.get("uniform_energy_uj", {}), final.get("uniform_widths", {})
    e = final.get("energy_uj")
    known = [k for k in energies if k in widths and energies[k] and energies[k] > 0]
    if not known or not e or e <= 0:
        return None
    return min(known, key=lambda k: abs(math.log(energies[k] / e)))


def fig5_layers(data: dict, path: Path) -> None:
    final = data["final"]
    k = float(data["cfg"].get("report", {}).get("compare_uniform", 4.0))
    widths = final.get("widths") or (data["pareto"][-1]["widths"] if data["pareto"] else None)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    if widths:
        x = list(range(1, len(widths) + 1))
        stored = final.get("uniform_widths", {})  # written by stage C
        labels = [lab for lab in dict.fromkeys([nearest_uniform(final), f"U-{k:g}x"]) if lab and stored.get(lab)]
        bars = [*labels, "searched"]
        step = 0.8 / len(bars)
        for i, lab in enumerate(bars):
            ys = widths if lab == "searched" else stored[lab]
            name = "HAWIS (searched)" if lab == "searched" else (
                f"{lab} (nearest in energy)" if lab == nearest_uniform(final) else lab)
            ax.bar([v - 0.4 + step * (i + 0.5) for v in x], ys, width=step, label=name,
                   color="#e0a000" if lab == "searched" else ("#1f77b4" if i == 0 else "#9ecae1"))
        ax.set_xticks(x)
    finish(fig, ax, path, xlabel="layer", ylabel="#output channels", title="Channels per layer (HAWIS Fig. 5 style)")


def make_report(run_dir: str | Path) -> list[str]:
    """(Re)generate figures/ and table.md of a run folder; returns the written paths."""
    run = Path(run_dir)
    data = _load(run)
    figs = run / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    out = []
    try:  # a record missing a field (an edited or foreign file) is a one-line error, not a traceback
        for name, fn in (("fig1_pareto.png", fig1_pareto), ("fig4_channels_per_episode.png", fig4_channels),
                         ("fig5_channels_per_layer.png", fig5_layers)):
            fn(data, figs / name)
            out.append(str(figs / name))
        table = table_markdown(run) + seeds_markdown(data["stage_c"], data["final"])
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
        raise CimnasError(f"{run}: its episodes.jsonl / pareto.json / final.json / stage_c.json lack what the "
                          f"report reads ({type(e).__name__}: {e}); the run folder was edited: restore the files or "
                          "rerun the stage that wrote them") from e
    atomic_write_bytes(run / "table.md", table.encode())
    out.append(str(run / "table.md"))
    return out
