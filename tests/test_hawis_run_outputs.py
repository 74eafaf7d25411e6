"""What a tiny HAWIS run (stages A -> B -> C) writes, as a newcomer reads it (issue 24): the checkpoint's energy
equals the pipeline's (point 2), episodes counted from 1 everywhere and one accuracy / energy convention (point 6),
robustness and checkpoints for the U-kx baselines with a robustness column in table.md (point 8), degenerate runs
that say so (point 10)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from cimnas.cli import main
from cimnas.pipelines.hawis import load_hawis_config, run_pipeline
from cimnas.stats import at_chance
from cimnas.utils.units import pct, uj
from test_hawis_pipeline import TINY as PIPELINE_TINY

# test_hawis_pipeline's tiny run, smaller still, with a U-1x baseline, 1 trial, 2 episodes under a ddpg warm-up of 5
# (a degenerate search) and a hardware field set (the energy must follow the run's own section)
TINY = copy.deepcopy(PIPELINE_TINY)
TINY["data"].update(limit=120, test_limit=40)
TINY["pretrain"].update(batch_size=40, max_batches=1)
TINY["search"].update(episodes=2)
TINY["search"]["agent_options"].update(warmup_episodes=5, batch_size=2)
TINY["search"]["env"].update(batch_size=40, slimmable_epochs=0.2, candidate_epochs=0.2)
TINY["retrain"].update(batch_size=40, baselines=[1])
TINY["defects"] = {"trials": 1}
TINY["hardware"] = {"preset": "mnsim-default", "rows": 128}


@pytest.fixture(scope="module")
def hawis_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hawis")
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(TINY))
    run_pipeline(load_hawis_config(tmp / "cfg.yaml", []), tmp / "run")
    return tmp / "run"


def _energy(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["energy", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_checkpoint_energy_equals_pipeline(hawis_run, capsys):
    final = json.loads((hawis_run / "final.json").read_text())
    for where in (hawis_run, hawis_run / "checkpoints" / "final_model.pt"):
        out = _energy(capsys, "--checkpoint", str(where))
        assert out["energy_uj"] == pytest.approx(final["energy_uj"], rel=1e-12)
        assert out["crossbars"] == final["crossbars"]
    # the run's own hardware section (rows=128) is used; the default 256-row preset gives another number
    other = _energy(capsys, "--checkpoint", str(hawis_run), "--preset", "mnsim-default")
    assert other["energy_uj"] != pytest.approx(final["energy_uj"])
    same = _energy(capsys, "--checkpoint", str(hawis_run), "--preset", "mnsim-default", "--set", "hardware.rows=128")
    assert same["energy_uj"] == pytest.approx(final["energy_uj"], rel=1e-12)
    more = _energy(capsys, "--checkpoint", str(hawis_run), "--set", "hardware.adc_bits=7")  # on top of rows=128
    assert more["energy_uj"] > final["energy_uj"] and more["crossbars"] == final["crossbars"]


def test_checkpoint_with_describing_options_refused(hawis_run, capsys):
    assert main(["energy", "--checkpoint", str(hawis_run), "--bits", "8"]) == 2
    assert "fixed by" in capsys.readouterr().err


def test_episodes_counted_from_one_everywhere(hawis_run):
    recs = [json.loads(x) for x in (hawis_run / "episodes.jsonl").read_text().splitlines()]
    n = TINY["search"]["episodes"]
    assert [r["episode"] for r in recs] == list(range(1, n + 1))
    log = (hawis_run / "run.log").read_text()
    assert [int(m) for m in re.findall(rf"episode (\d+)/{n}", log)] == list(range(1, n + 1))
    best = json.loads((hawis_run / "best_arch.json").read_text())
    line = next(x for x in log.splitlines() if f"episode {best['episode']}/{n}" in x)
    assert f"reward {best['reward']:+.4f}" in line  # the summary's episode is the log's episode


def test_one_accuracy_and_energy_convention():
    assert pct(0.78824) == "78.82%" and uj(0.012345) == "0.0123 uJ" and uj(9.304) == "9.3 uJ"


def test_logs_show_accuracy_in_percent(hawis_run):
    log = (hawis_run / "run.log").read_text()
    assert re.search(r"acc \d+\.\d\d%", log) and not re.search(r"acc 0\.\d{4}\b", log)


def test_baselines_get_robustness_checkpoint_and_table_column(hawis_run, capsys):
    stage_c = json.loads((hawis_run / "stage_c.json").read_text())
    for label in ("searched", "U-1x"):
        assert stage_c[label]["robustness"]["trials"] == TINY["defects"]["trials"]
    ckpt = hawis_run / "checkpoints" / "model_U-1x.pt"
    assert ckpt.is_file()
    out = _energy(capsys, "--checkpoint", str(ckpt))
    assert out["energy_uj"] == pytest.approx(stage_c["U-1x"]["energy_uj"], rel=1e-12)
    table = (hawis_run / "table.md").read_text().splitlines()
    assert "Under defects (%)" in table[0]
    row = next(x for x in table if x.startswith("| U-1x |"))
    assert row.split("|")[4].strip() == f"{100 * stage_c['U-1x']['robustness']['mean']:.2f}"


def test_at_chance_binomial_bound():
    # 10 classes, 100 samples: p = 0.1, se = 0.03 -> chance up to 0.16
    assert at_chance(0.16, 10, 100) and not at_chance(0.17, 10, 100)
    assert at_chance(0.5, 2, 10_000) and not at_chance(0.52, 2, 10_000)


def test_degenerate_run_says_so(hawis_run):
    log = (hawis_run / "run.log").read_text()
    assert "is not more than the ddpg agent's warm-up (5 episodes" in log  # 2 episodes < warm-up 5
    stage_c = json.loads((hawis_run / "stage_c.json").read_text())
    n_test = TINY["data"]["test_limit"]
    for label, entry in stage_c.items():
        said = f"warning: stage C {label} is at chance" in log
        assert said == at_chance(entry["test_accuracy"], 10, n_test), label
