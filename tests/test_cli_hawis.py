"""`cimnas hawis ...`: exit codes, one-line errors, final report, report regeneration."""

from __future__ import annotations

import yaml

from cimnas.cli import main
from test_hawis_pipeline import TINY


def _write(tmp_path, data=None):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data or TINY))
    return str(p)


def test_run_prints_final_report_and_refuses_to_overwrite(tmp_path, capsys):
    cfg, out = _write(tmp_path), str(tmp_path / "run")
    assert main(["hawis", "run", "--config", cfg, "--out", out, "--set", "search.episodes=2",
                 "--set", "retrain.baselines=[]", "--set", "defects.trials=1"]) == 0
    text = capsys.readouterr().out
    assert "final model: test accuracy" in text and "widths:" in text and "fig1_pareto.png" in text
    before = (tmp_path / "run" / "episodes.jsonl").read_text()
    assert main(["hawis", "run", "--config", cfg, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "run" / "episodes.jsonl").read_text() == before
    (tmp_path / "run" / "table.md").unlink()
    assert main(["hawis", "report", out]) == 0
    assert (tmp_path / "run" / "table.md").is_file()


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    cfg = _write(tmp_path)
    cases = [
        ["hawis", "run", "--config", cfg, "--out", str(tmp_path / "a"), "--set", "space.r_min=9"],
        ["hawis", "run", "--config", cfg, "--out", str(tmp_path / "b"), "--set", "space.d=0"],
        ["hawis", "run", "--config", cfg, "--out", str(tmp_path / "c"), "--set", "search.env.lam=0"],
        ["hawis", "retrain", "--config", cfg, "--out", str(tmp_path / "d"), "--set", "retrain.widths=[16,17]"],
        ["hawis", "run", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "e")],
        ["hawis", "report", str(tmp_path / "not_a_run")],
        ["hawis", "run", "--config", cfg, "--out", str(tmp_path / "f"), "--set", "search.env.lam=inf"],
        ["hawis", "run", "--config", cfg, "--out", str(tmp_path / "g"), "--set", "space.r_max=inf"],
        ["hawis", "run", "--config", cfg, "--out", str(tmp_path / "h"), "--set", "search.agent_options.tau=5"],
        ["hawis", "run", "--config", cfg, "--out", str(tmp_path / "i"), "--set", "model.thermometer_levels=0"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("cimnas: error:") and len(err.splitlines()) == 1, err
    for name in "abcfghi":  # refused before a run folder was made
        assert not (tmp_path / name).exists(), name
