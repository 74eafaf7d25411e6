"""Issue 23, pattern 5: one limits check for every model, however it is described, and a preset is a NAME.

`build_model` (and `arch_geometry` for energy estimates) first builds on the meta device and refuses a model over
`CIMNAS_MAX_PARAMS` before any weight is allocated: from a config, an override, a Table-1 row, an --arch file, a
checkpoint's arch. Spec counts are bounded; `--preset` reads only the presets folder; files and overrides go
through the size / value-count / duplicate-key checks; error messages never print a huge expansion."""

from __future__ import annotations

import json

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import list_presets, load_spec
from cimnas.nn.models import build_model, rebuild_model
from faultkit import main_refused, snapshot, tiny_config

HUGE_MLP = "{hidden_sizes: [100000000]}"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_table1_row_over_the_limit_is_refused_before_any_weight(tmp_path, capsys):
    cfg = tmp_path / "t1.yaml"
    cfg.write_text("seed: 0\ndevice: cpu\ndata: {name: digits, limit: 100, test_limit: 50}\nseeds: [0]\n"
                   "train: {epochs: 1, batch_size: 50, lr: 0.05, progress: false}\n"
                   "analysis: {samples: 10, bins: 5}\n"
                   "rows: [{label: ok, model: mlp, kwargs: {hidden_sizes: [8]}}]\n")
    out = tmp_path / "T1"
    main_refused(capsys, "uae", "table1", "--config", cfg, "--out", out,
                 "--set", f"rows=[{{label: x, model: mlp, kwargs: {HUGE_MLP}}}]",
                 needles=("model mlp", "parameters", "CIMNAS_MAX_PARAMS"))
    assert not out.exists()  # refused before its first write: no folder left behind


@pytest.mark.parametrize("override", [f"model.options={HUGE_MLP}", "model.options={hidden_sizes: [30000, 30000]}",
                                      "model.width_mult=64"])
def test_train_override_over_the_limit(tmp_path, capsys, override, monkeypatch):
    monkeypatch.setenv("CIMNAS_MAX_PARAMS", "1e6")
    out = tmp_path / "run"
    main_refused(capsys, "train", "--config", tiny_config(tmp_path), "--out", out, "--set", override,
                 needles=("parameters",))
    assert not out.exists()


@pytest.mark.parametrize("model, widths", [("resnet20", [10**6] * 19), ("mlp", [10**5, 10**5])])
def test_energy_arch_file_over_the_limit(tmp_path, capsys, model, widths):
    arch = tmp_path / "best_arch.json"
    arch.write_text(json.dumps({"widths": widths}))
    before = snapshot(tmp_path)
    main_refused(capsys, "energy", "--model", model, "--arch", arch, needles=("parameters", "CIMNAS_MAX_PARAMS"))
    assert snapshot(tmp_path) == before


def test_build_model_and_rebuild_refuse_before_allocating(monkeypatch):
    monkeypatch.setenv("CIMNAS_MAX_PARAMS", "1000")
    kw = dict(in_channels=1, num_classes=10, image_size=8, hidden_sizes=[10**6])
    with pytest.raises(CimnasError, match="parameters"):
        build_model("mlp", **kw)  # 6.4e7 params: allocating them would take seconds, the probe takes none
    with pytest.raises(CimnasError, match="parameters"):
        rebuild_model({"name": "mlp", **kw})  # a checkpoint's arch (uae final --from, robustness)
    with torch.device("meta"):  # a meta build is the probe itself: never refused for memory
        assert build_model("mlp", **kw) is not None
    monkeypatch.setenv("CIMNAS_MAX_PARAMS", "2e8")
    small = build_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden_sizes=[4], seed=3)
    again = build_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden_sizes=[4], seed=3)
    assert all(torch.equal(a, b) for a, b in zip(small.parameters(), again.parameters(), strict=True))


@pytest.mark.parametrize("field, value", [("rows", "18446744073709551616"), ("columns", str(2**40)),
                                          ("adcs_per_crossbar", str(10**12)), ("crossbars_per_tile", "1e300")])
def test_spec_counts_are_bounded(tmp_path, capsys, field, value):
    main_refused(capsys, "energy", "--model", "mlp", "--set", f"spec.{field}={value}", needles=(field,))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{field}: {value}\n")
    main_refused(capsys, "energy", "--model", "mlp", "--spec", spec, needles=(field,))


@pytest.mark.parametrize("name", ["../../elsewhere/file", "/etc/passwd", "mnsim-default/../mnsim-default",
                                  "../presets/mnsim-default", "mnsim-default.yaml", "", "x" * 5000])
def test_preset_is_a_name_never_a_path(tmp_path, capsys, name):
    line = main_refused(capsys, "energy", "--model", "mlp", "--preset", name,
                        needles=("unknown crossbar preset", "--spec FILE"))
    assert len(line) < 600  # the 5000-character name is shortened
    assert list_presets()[0] in line


def test_alias_bomb_spec_file_is_refused_at_once_in_one_short_line(tmp_path, capsys):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BOMB + "rows: *i\n")
    assert spec.stat().st_size < 600
    line = main_refused(capsys, "energy", "--model", "mlp", "--spec", spec, needles=("expands to more than",))
    assert len(line) < 400


@pytest.mark.parametrize("override", ["model.name=[" + ",".join(["x"] * 20000) + "]",
                                      "train.lr=" + "9" * 5000, "model.precision=" + "q" * 100000])
def test_error_messages_never_print_a_huge_value(tmp_path, capsys, override):
    line = main_refused(capsys, "train", "--config", tiny_config(tmp_path), "--out", tmp_path / "run",
                        "--set", override)
    assert len(line) < 600 and ("..." in line or "too long" in line)
    assert not (tmp_path / "run").exists()


def test_preset_files_read_like_user_files(monkeypatch, tmp_path):
    """A preset that is a list, has a duplicate key or is a bomb: one-line errors (the presets folder is the
    package's, but the same reader guards it)."""
    import cimnas.hardware.crossbar as xb

    monkeypatch.setattr(xb, "_preset_dir", lambda: tmp_path)
    for text, needle in (("- rows: 128\n- columns: 128\n", "mapping at the top level"),
                         ("rows: 128\nrows: 64\n", "duplicate key 'rows'"), (BOMB, "expands to more than")):
        (tmp_path / "odd.yaml").write_text(text)
        with pytest.raises(CimnasError, match=needle):
            load_spec("odd")
