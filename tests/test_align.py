"""cimnas.hardware.align and `cimnas align` against hand-counted crossbar fills (mnsim-default: 256x256 crossbars,
4 PEs per tile, 128 rows driven and 128 columns converted per read round, 1-bit weights: one slice)."""

import json

import pytest

from cimnas.cli import main
from cimnas.hardware.align import ArchProbe, align, aligned_choices, aligned_uniform, layer_fill, lower_filling
from cimnas.hardware.crossbar import load_spec
from cimnas.hardware.energy import estimate_layer
from cimnas.nn.counting import LayerGeom

SPEC = load_spec("mnsim-default")
FASHION = dict(in_channels=1, num_classes=10, image_size=28, precision="binary",
               refactor={"thermometer": True, "thermometer_levels": 8})


def conv(c_in: int, c_out: int) -> dict:
    """One binary 3x3 conv on a 14x14 map, as the energy model charges it."""
    return estimate_layer(LayerGeom("c", "conv", c_in, c_out, 3, 1, (14, 14), (14, 14), 1, 1), SPEC)


def groups(a: int, b: int, c: int) -> list[int]:
    return [a] * 7 + [b] * 6 + [c] * 6


@pytest.fixture(scope="module")
def probe():
    return ArchProbe("resnet20", SPEC, **FASHION)


def test_fill_of_one_crossbar_pair():
    # C_in 32: floor(256 / 9) = 28 channels per crossbar -> 2 row tiles; C_out 32 <= 256 columns -> 1 column tile.
    # 2 PEs in 1 tile (max_pe 2): 2 charged PEs. Used cells 32*9 rows x 32 columns = 9216 of 2 * 256 * 256.
    r = conv(32, 32)
    assert (r["row_tiles"], r["col_tiles"], r["tiles"], r["charged_crossbars"]) == (2, 1, 1, 2)
    f = layer_fill(r, SPEC)
    assert f["fill_pct"] == pytest.approx(100 * 9216 / (2 * 65536))  # 7.03 %
    assert f["row_fill_pct"] == pytest.approx(100 * 288 / 512)  # 56.25 %
    assert f["column_fill_pct"] == pytest.approx(100 * 32 / 256)  # 12.5 %
    # read rounds: fullest crossbar 28 * 9 = 252 rows -> ceil(252 / 128) = 2; 32 columns -> 1 ADC round
    assert r["read_rounds"] == 2


def test_fill_past_a_tile_boundary():
    # C_in 112 = 4 x 28: 4 PEs, exactly one tile of 4: 112*9 = 1008 rows x 32 columns of 4 * 65536 cells
    at = conv(112, 32)
    assert (at["crossbars"], at["tiles"], at["charged_crossbars"]) == (4, 1, 4)
    assert layer_fill(at, SPEC)["fill_pct"] == pytest.approx(100 * 1008 * 32 / (4 * 65536))  # 12.30 %
    # C_in 116: ceil(116 / 28) = 5 PEs -> ceil(5 / 4) = 2 tiles, each charged at max_pe 4 = 8 PEs paid for;
    # 116*9 = 1044 rows x 32 columns of 8 * 65536 cells: the fill halves and the energy jumps
    past = conv(116, 32)
    assert (past["crossbars"], past["tiles"], past["charged_crossbars"]) == (5, 2, 8)
    assert layer_fill(past, SPEC)["fill_pct"] == pytest.approx(100 * 1044 * 32 / (8 * 65536))  # 6.37 %
    assert past["energy_uj"] > 1.9 * at["energy_uj"]


def test_fill_past_a_read_round_boundary():
    # rows driven per round: 128. C_in 14 -> 14*9 = 126 rows: 1 round; C_in 15 -> 135 rows: 2 rounds,
    # same single crossbar (1 PE), so the fill rises while the energy nearly doubles
    a, b = conv(14, 32), conv(15, 32)
    assert (a["crossbars"], a["read_rounds"], b["crossbars"], b["read_rounds"]) == (1, 1, 1, 2)
    assert layer_fill(a, SPEC)["row_fill_pct"] == pytest.approx(100 * 126 / 256)
    assert layer_fill(b, SPEC)["row_fill_pct"] == pytest.approx(100 * 135 / 256)
    # columns: 128 outputs fit one ADC round, 132 need two (ceil(132 / 128))
    assert (conv(32, 128)["read_rounds"], conv(32, 132)["read_rounds"]) == (2, 4)


def test_neighbours_of_u1x(probe):
    out = align(probe, groups(16, 32, 64), d=4)
    by = {r["index"]: r for r in out["neighbours"]}
    # stem + stage 1 (16): 16*9 = 144 rows > 128 -> 2 read rounds; 12*9 = 108 -> 1: lower 12. Upper: 28 fills a
    # crossbar (252 rows), 32 starts a second one.
    assert (by[3]["lower"], by[3]["upper"]) == (12, 28)
    # stage 2 (32): 28 is the last width on one crossbar, 56 = 2 x 28 on two
    assert (by[9]["lower"], by[9]["upper"]) == (28, 56)
    # stage 3 (64): 56 on two crossbars, 84 = 3 x 28 on three
    assert (by[15]["lower"], by[15]["upper"]) == (56, 84)
    # the last conv feeds the flattened classifier (49 rows per channel): no staircase below 128 columns
    assert by[18]["lower"] is None and by[18]["upper"] == 128
    for r in out["neighbours"]:
        if r["lower"] is not None:
            assert r["lower_energy_uj"] <= r["energy_uj"] and r["saving_pct"] >= 0
    assert out["aligned"]["energy_uj"] < out["energy_uj"]
    # d = 1: the read-round step itself, 14 channels (126 rows)
    assert lower_filling(probe, groups(16, 32, 64), [3], 16, 1) == 14


def test_tile_step_and_literal_rule(probe):
    w = groups(16, 32, 116)
    # stage-3 width 116 on its consumer: 5 PEs in 2 tiles; 112 = 4 PEs in one tile
    assert align(probe, w, d=4)["neighbours"][14]["lower"] == 112
    # the classifier: 49 rows per channel, a tile (4 x 256 rows) holds floor(1024 / 49) = 20 channels, so with
    # the literal rule (every count change) 60 (2940 rows, 3 tiles) is the last width of 3 tiles below 64
    # (62.7 channels); the default rule drops these steps (they cost < 0.01 % of the energy)
    u = groups(16, 32, 64)
    assert lower_filling(probe, u, [18], 64, 4, min_jump=None) == 60
    assert lower_filling(probe, u, [18], 64, 4) is None


def test_aligned_uniform(probe):
    a = aligned_uniform("resnet20", SPEC, width_mult=1.0, probe=probe)
    assert a["uniform_widths"] == groups(16, 32, 64) and a["widths"] == groups(12, 28, 56)
    assert a["energy_uj"] < a["uniform_energy_uj"]
    b = aligned_uniform("resnet20", SPEC, width_mult=1.75, probe=probe)  # fills every crossbar already
    assert b["widths"] == b["uniform_widths"] == groups(28, 56, 112)
    c = aligned_uniform("resnet20", SPEC, energy_budget=a["energy_uj"], probe=probe)
    assert c["energy_uj"] == pytest.approx(a["energy_uj"]) and c["widths"] == a["widths"]
    d = aligned_uniform("resnet20", SPEC, energy_budget=b["energy_uj"] * 0.999, probe=probe)
    assert a["energy_uj"] <= d["energy_uj"] < b["energy_uj"]


def test_aligned_choices(probe):
    lo, hi = groups(8, 16, 32), groups(32, 64, 128)
    ch = aligned_choices(probe, lo, hi)
    assert ch[0] == [8, 12, 28]  # first step (<= 12), then the crossbar fill 28
    assert ch[7] == [16, 20, 24, 28, 56]
    assert ch[18] == list(range(32, 129, 4))  # no staircase: every width


@pytest.mark.parametrize("args, msg", [
    (["--widths", "16,16"], "expects 19 widths"),
    (["--widths", "0" + ",16" * 18], "widths must be in"),
    (["--widths=-4" + ",16" * 18], "widths must be in"),
    (["--preset", "nope"], "unknown crossbar preset"),
    (["--d", "0"], "granularity"),
])
def test_cli_bad_input(capsys, args, msg):
    assert main(["align", "--dataset", "digits", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_cli_json(capsys):
    assert main(["align", "--dataset", "fashion-mnist", "--thermometer", "8", "--json",
                 "--widths", ",".join(map(str, groups(28, 56, 112)))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["aligned_uniform"]["widths"] == groups(28, 56, 112)
    assert all(r["saving_pct"] == 0 for r in out["neighbours"])
    assert {"fill_pct", "row_fill_pct", "column_fill_pct"} <= set(out["layers"][1])
