"""Figures a newcomer can read (issue 24 point 11): plain log-axis ticks, fig5 against the U-kx nearest in energy,
labelled bands and regions, the UAE best-so-far as steps with whole-episode ticks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cimnas.reports.figures import readable_axes  # noqa: E402
from cimnas.reports.hawis_plots import nearest_uniform  # noqa: E402
from cimnas.reports.robustness_plot import plot_robustness  # noqa: E402
from cimnas.reports.uae_search import reward_axes  # noqa: E402


def _labels(fig, axis) -> list[str]:
    fig.canvas.draw()
    return [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_text()]


def test_log_ticks_are_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([0.45, 0.6, 1.9], [1, 2, 3])
    ax.set_xscale("log")
    readable_axes(ax)
    texts = _labels(fig, ax.xaxis)
    plt.close(fig)
    assert texts and not any("times" in t or "^" in t or "$" in t for t in texts), texts
    assert "0.5" in texts and "1" in texts


def test_fig5_compares_with_nearest_uniform_in_energy():
    final = {"energy_uj": 0.52, "uniform_energy_uj": {"U-1x": 0.47, "U-2x": 1.9, "U-3x": 4.3},
             "uniform_widths": {"U-1x": [4], "U-2x": [8], "U-3x": [12]}}
    assert nearest_uniform(final) == "U-1x"
    assert nearest_uniform({**final, "energy_uj": 3.0}) == "U-3x"  # log scale: 3.0 is nearer 4.3 than 1.9
    assert nearest_uniform({"energy_uj": 1.0}) is None


def test_uae_best_so_far_is_a_step_with_integer_ticks():
    fig, ax = plt.subplots()
    reward_axes(ax, [1, 2, 3], [0.2, 0.1, 0.5])
    line = ax.lines[0]
    assert line.get_drawstyle() == "steps-post" and list(line.get_ydata()) == [0.2, 0.2, 0.5]
    texts = _labels(fig, ax.xaxis)
    plt.close(fig)
    assert all(float(t.replace("\u2212", "-")).is_integer() for t in texts), texts


def test_robustness_band_and_region_labelled(tmp_path, monkeypatch):
    seen = []
    real_legend = matplotlib.axes.Axes.legend

    def spy(self, *a, **k):
        seen.append([t for t in self.get_legend_handles_labels()[1]])
        return real_legend(self, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", spy)
    rows = [{"level": 0.0, "mean": 0.9, "std": 0.01}, {"level": 0.02, "mean": 0.8, "std": 0.02}]
    plot_robustness({"trials": 2, "kinds": {"sa0": {"levels": [0, 0.02], "models": {"u1x": rows}}}},
                    tmp_path / "r.png")
    labels = seen[0]
    assert any("std" in t for t in labels) and any("region of interest" in t for t in labels)
