"""`cimnas energy` per-layer table and JSON: positions, read rounds, crossbars and fill, the per-component split,
--sort, and the columns explained in the help (issue 24 point 3)."""

from __future__ import annotations

import json

import pytest

from cimnas.cli import main


def _json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["energy", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_layers_carry_positions_rounds_fill_and_split(capsys):
    out = _json(capsys, "--model", "resnet20", "--bits", "1")
    first, last_conv = out["layers"][0], out["layers"][-2]
    assert first["positions"] == 32 * 32 and last_conv["positions"] == 8 * 8  # stride-2 stages: 32 -> 16 -> 8
    for lay in out["layers"]:
        assert lay["energy_uj"] == pytest.approx(sum(lay["energy_pj"].values()) * 1e-6)
        assert 0 < lay["utilization"] <= 1 and lay["read_rounds"] >= lay["input_cycles"] >= 1
    # same weights and rounds, 16x the positions -> 16x the ADC energy (the docstring's 8x8 vs 2x2)
    a, b = out["layers"][1], next(x for x in out["layers"] if x["positions"] == 64 and x["in_channels"] == 64)
    assert a["energy_pj"]["adc"] / a["positions"] / a["crossbars"] / a["read_rounds"] == pytest.approx(
        b["energy_pj"]["adc"] / b["positions"] / b["crossbars"] / b["read_rounds"] * a["out_channels"] /
        b["out_channels"])


@pytest.mark.parametrize("key, field", [("energy", "energy_uj"), ("crossbars", "crossbars"),
                                        ("latency", "latency_us")])
def test_sort_largest_first(capsys, key, field):
    rows = _json(capsys, "--sort", key)["layers"]
    values = [r[field] for r in rows]
    assert values == sorted(values, reverse=True)


def test_table_and_help_explain_columns(capsys):
    assert main(["energy"]) == 0
    head = capsys.readouterr().out.splitlines()[1].split()
    assert {"pos", "rounds", "xbars", "fill", "adc%", "buf%"} <= set(head)
    with pytest.raises(SystemExit):
        main(["energy", "-h"])
    text = capsys.readouterr().out
    assert "fill" in text and "used cells" in text and "positions" in text
