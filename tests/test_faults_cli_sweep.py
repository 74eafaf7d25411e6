"""Hostile input from the command line, swept over every `cimnas` sub-command and the study drivers: what the
other fault tests (test_faults_*.py, test_cli_*.py, test_data_hostile.py) did not cover. Each case was a traceback
or a silent wrong behaviour before its fix; the contract: exit code 2, one line on stderr, no traceback, nothing
on disk created or changed."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from cimnas.cli import main
from cimnas.pipelines.studies import hawis_study, headroom, uae_study
from faultkit import assert_one_line, folder_hash

HAWIS = {
    "seed": 3, "device": "cpu",
    "data": {"name": "digits", "limit": 160, "test_limit": 60},
    "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
    "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
    "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2},
    "search": {"episodes": 2, "agent": "random",
               "env": {"batch_size": 32, "slimmable_epochs": 0.3, "candidate_epochs": 0.3, "bn_recal_batches": 1,
                       "lam": 0.2}},
    "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "baselines": []},
    "defects": {"trials": 1},
}
UAE = {
    "label": "tiny", "seed": 0, "device": "cpu", "progress": False,
    "data": {"name": "digits", "limit": 200, "test_limit": 100},
    "space": {"n_conv": 2, "pool_after": [1, 2], "n_fc": 1, "fc_hidden": 8, "channels": [4, 8], "kernels": [1, 3],
              "int_bits": [0, 1], "frac_bits": [0, 1]},
    "train": {"epochs": 1, "batch_size": 50, "optimizer": "adam", "lr": 0.003, "progress": False},
    "eval": {"k": 1, "statistic": "mean"},
    "controller": {"hidden": 8, "layers": 1, "lr": 0.03, "batch_rollouts": 2},
    "search": {"episodes": 2},
    "final": {"epochs": 1, "samples": 4},
}
TRAIN = {"seed": 0, "data": {"name": "digits", "limit": 200, "test_limit": 100},
         "model": {"name": "mlp", "precision": "float"},
         "train": {"epochs": 1, "batch_size": 50, "lr": 0.05, "progress": False}}


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def refused(capsys, rc, *needles, prefix="cimnas: error:"):
    """Exit 2, one line on stderr starting with `prefix` and holding every needle, no traceback."""
    err = capsys.readouterr().err
    if prefix == "cimnas: error:":
        return assert_one_line(rc, err, *needles)
    assert rc == 2 and "Traceback" not in err, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


def exit_code(fn, argv):
    """`fn(argv)`'s return value, or the code of the SystemExit argparse raises."""
    try:
        return fn(argv)
    except SystemExit as e:
        return e.code


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny HAWIS run, UAE search run and train run (about 25 s together)."""
    base = tmp_path_factory.mktemp("sweep")
    for kind, argv in (("hawis", ["hawis", "run", "--config", _yaml(base / "h.yaml", HAWIS)]),
                       ("uae", ["uae", "search", "--config", _yaml(base / "u.yaml", UAE)]),
                       ("train", ["train", "--config", _yaml(base / "t.yaml", TRAIN)])):
        assert main([*argv, "--out", str(base / kind)]) == 0, kind
    return base


def _copy(runs, kind, dst):
    return shutil.copytree(runs / kind, dst)


# ---------------------------------------------------------------- config files
def test_empty_config_file_is_refused_everywhere(tmp_path, capsys):
    """An empty (or comments-only) --config used to run every command but `cimnas train` with its full default
    budget (HAWIS: 600 episodes of a ResNet-20), or print the defaults' numbers (energy --spec)."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    out = tmp_path / "out"
    cli_cases = [["hawis", "run", "--config", str(empty), "--out", str(out)],
                 ["uae", "search", "--config", str(empty), "--out", str(out)],
                 ["energy", "--spec", str(empty)]]
    for argv in cli_cases:
        refused(capsys, main(argv), "is empty")
    for fn, argv in ((headroom.main, [str(empty), str(out)]),
                     (hawis_study.main, ["uniform-widths", str(empty), "2"]),
                     (hawis_study.main, ["run", str(empty), str(out)]),
                     (uae_study.main, ["run", str(out), "--methods", f"m={empty}"])):
        refused(capsys, fn(argv), "is empty", prefix="error:")
    assert not out.exists()


# ---------------------------------------------------------------- energy / robustness flags
@pytest.mark.parametrize("argv, needle", [
    (["--num-classes", "0"], "--num-classes must be >= 1"),  # was a ZeroDivisionError traceback
    (["--num-classes", "-3"], "--num-classes must be >= 1"),
    (["--widths", ""], "--widths is empty"),  # was silently the 1x widths
    (["--widths", "16", "--arch", "best_arch.json"], "not both"),  # --widths was silently ignored
    (["--spec", "src/cimnas/hardware/presets/mnsim-128.yaml", "--preset", "hawis-tolerance"],
     "not both"),  # --preset ignored
    (["--dataset", "digits", "--input-shape", "3x32x32"], "drop --input-shape"),  # --input-shape ignored
])
def test_energy_flags(capsys, argv, needle):
    refused(capsys, main(["energy", *argv]), needle)


@pytest.mark.parametrize("argv, needle", [
    (["--device", "nosuch"], "unknown device 'nosuch'"),  # was a RuntimeError traceback from torch.device
    (["--device", "cuda:99"], "cuda:99"),  # was an AssertionError / CUDA traceback
    (["--out", "somewhere"], "--out applies to --sweep only"),  # nothing was written, silently
    (["--sa0-levels", "0.1,0.2"], "--sa0-rate-levels applies to --sweep only"),
    (["--sweep", "--sa0", "0.1"], "--sa0"),  # the sweep ignored --sa0
    (["--sweep", "--sa0-levels", ",,"], "--sa0-rate-levels is empty"),  # was silently the default levels
    (["--seed", "-1"], "--seed must be in 0 .. 2**63 - 1"),
    (["--data-dir", "no/such/folder"], "--data-dir no/such/folder not found"),
])
def test_robustness_flags_checked_before_loading(capsys, tmp_path, argv, needle):
    # the checkpoint does not exist: each refusal comes before anything is loaded
    refused(capsys, main(["robustness", "--checkpoint", str(tmp_path / "none.pt"), *argv]), needle)
    assert not (tmp_path / "somewhere").exists()


def test_robustness_sweep_out_is_a_file(capsys, tmp_path):
    """Refused before the sweep (it used to run the whole sweep, then fail to write into the file)."""
    out = tmp_path / "afile"
    out.write_text("mine")
    refused(capsys, main(["robustness", "--checkpoint", str(tmp_path / "none.pt"), "--sweep", "--out", str(out)]),
            "is a file")
    assert out.read_text() == "mine"


def test_data_dir_that_does_not_exist(tmp_path, capsys):
    """digits is bundled, so a mistyped --data-dir used to be ignored without a word."""
    nowhere = str(tmp_path / "nowhere")
    cfg = _yaml(tmp_path / "t.yaml", TRAIN)
    refused(capsys, main(["train", "--config", cfg, "--out", str(tmp_path / "run"), "--data-dir", nowhere]),
            "nowhere", "not found")
    refused(capsys, main(["uae", "analyze", "--model", "mlp", "--dataset", "digits", "--data-dir", nowhere,
                          "--out", str(tmp_path / "an")]), "not found")
    refused(capsys, main(["uae", "analyze", "--model", "mlp", "--dataset", "digits", "--seed", "-1",
                          "--out", str(tmp_path / "an")]), "--seed must be in")
    assert not (tmp_path / "run").exists() and not (tmp_path / "an").exists()


@pytest.mark.parametrize("override", ["model.options=5", "data.options=[1]"])
def test_options_section_must_be_a_mapping(tmp_path, capsys, override):
    """`options: dict` (a bare annotation) was not type-checked: build_model(**5) was a TypeError traceback."""
    out = tmp_path / "run"
    refused(capsys, main(["train", "--config", _yaml(tmp_path / "t.yaml", TRAIN), "--out", str(out),
                          "--set", override]), "expected a mapping")
    assert not out.exists()


# ---------------------------------------------------------------- HAWIS config checked before the folder exists
@pytest.mark.parametrize("override, needle", [
    ("hardware.overrides=[rows=0]", "crossbar must be at least 2x2"),
    ("data.options.foo=1", "dataset digits has no option foo"),
    ("search.agent_options=5", "expected a mapping"),
    ("data.name=nosuch", "unknown dataset 'nosuch'"),
    ("model.name=nosuch", "unknown model 'nosuch'"),
    ("hardware.preset=nosuch", "unknown crossbar preset 'nosuch'"),
    ("seed=-1", "seed must be in 0 .. 2**63 - 1"),  # cimnas train refused it, HAWIS ran with it
    ("seed=99999999999999999999999", "seed must be in 0 .. 2**63 - 1"),
])
def test_hawis_bad_names_leave_no_run_folder(tmp_path, capsys, override, needle):
    """The names were refused only after `RunFolder.open` had written config.yaml / run.json, so the corrected
    command then met 'already holds a hawis run' and the user had to delete the folder."""
    out = tmp_path / "run"
    refused(capsys, main(["hawis", "run", "--config", _yaml(tmp_path / "h.yaml", HAWIS), "--out", str(out),
                          "--set", override]), needle)
    assert not out.exists()


# ---------------------------------------------------------------- reports on the wrong or an edited folder
def test_hawis_report_on_other_runs(runs, tmp_path, capsys):
    """`hawis report` on a train or UAE run folder was a KeyError traceback after it had made figures/ there."""
    for kind in ("train", "uae"):
        run = _copy(runs, kind, tmp_path / kind)
        before = folder_hash(run)
        had_figures = (run / "figures").is_dir()
        refused(capsys, main(["hawis", "report", str(run)]), "is not a HAWIS run folder", f"kind '{kind}")
        assert folder_hash(run) == before and (run / "figures").is_dir() == had_figures


@pytest.mark.parametrize("name, content, needle", [
    ("final.json", "[]", "final.json holds a list, not a dict"),  # was an AttributeError traceback
    ("stage_c.json", '{"U-1x": 5}', "lack what the report reads"),
    ("episodes.jsonl", '{"episode": 0}\n', "lack what the report reads"),  # was a KeyError traceback
])
def test_hawis_report_on_edited_files(runs, tmp_path, capsys, name, content, needle):
    run = _copy(runs, "hawis", tmp_path / "run")
    (run / name).write_text(content)
    table = (run / "table.md").read_bytes()
    refused(capsys, main(["hawis", "report", str(run)]), needle)
    assert (run / "table.md").read_bytes() == table


@pytest.mark.parametrize("name, content, needle", [
    (None, None, "is not a `uae search` run folder"),  # a HAWIS folder: KeyError 'cache_hit' traceback
    ("final.json", "[]", "is not a UAE final.json"),  # TypeError traceback
    ("final.json", '{"label": "x"}', "is not a UAE final.json (no k)"),  # KeyError traceback
    ("episodes.jsonl", '{"a": 1}\n', "line 1 is not a UAE episode record"),  # KeyError traceback
])
def test_uae_report_on_wrong_or_edited_folders(runs, tmp_path, capsys, name, content, needle):
    run = _copy(runs, "hawis" if name is None else "uae", tmp_path / "run")
    if name:
        (run / name).write_text(content)
    before = folder_hash(run)
    refused(capsys, main(["uae", "report", "--runs", str(run)]), needle)
    assert folder_hash(run) == before


def test_rank_check_space_json_not_a_mapping(runs, tmp_path, capsys):
    run = _copy(runs, "hawis", tmp_path / "run")
    (run / "space.json").write_text("[]")  # was a TypeError traceback in WidthSpace.from_dict
    archs = _yaml(tmp_path / "a.yaml", [{"name": n, "widths": [w, w]} for n, w in (("a", 8), ("b", 12), ("c", 16))])
    refused(capsys, main(["hawis", "rank-check", str(run), "--archs", archs, "--proxy-only"]),
            "space.json is not a width space")
    assert not (run / "rank_check").exists()


# ---------------------------------------------------------------- study drivers
@pytest.mark.parametrize("content, needle", [
    ("[1]", "is not a spread result"),  # AttributeError traceback
    ('{"accuracies": 5}', "accuracies = 5 is not an accuracy in [0, 1]"),  # TypeError traceback; numbers checked
    ('{"widths": [4, 4], "accuracies": {"U-1x-rep9": 0.5}}', "holds the spread of widths [4, 4]"),  # mixed in
])
def test_spread_out_json(tmp_path, capsys, content, needle):
    """A rerun adds to OUT_JSON: one of another U-kx used to be merged (mean / std over two networks)."""
    out = tmp_path / "spread.json"
    out.write_text(content)
    cfg = _yaml(tmp_path / "h.yaml", HAWIS)
    refused(capsys, hawis_study.main(["spread", cfg, "1", "2", str(out)]), needle, prefix="error:")
    assert out.read_text() == content


@pytest.mark.parametrize("fn, argv, needle", [
    (hawis_study.main, ["bogus"], "invalid choice: 'bogus'"),
    (hawis_study.main, ["run"], "the following arguments are required: config, out"),
    (hawis_study.main, ["run", "c.yaml", "o", "--agents", "nosuch"], "invalid choice: 'nosuch'"),
    (hawis_study.main, ["uniform-widths", "c.yaml", "abc"], "invalid float value: 'abc'"),
    (uae_study.main, ["run", "o", "--seeds", "abc"], "invalid int value: 'abc'"),
    (uae_study.main, [], "the following arguments are required: cmd"),
    (headroom.main, ["only-one"], "the following arguments are required: out"),
])
def test_study_driver_usage_errors_are_one_line(capsys, fn, argv, needle):
    """argparse's own errors printed the whole usage block (up to 13 lines) before the error."""
    line = refused(capsys, exit_code(fn, argv), needle, prefix="error:")
    assert "--help" in line


@pytest.mark.parametrize("name, needle", [
    ("../escape", "is not a folder name"),  # runs/../escape/seed0: a model folder outside runs/
    ("", "is not a folder name"),
    ("U-1x", "is the label of a uniform network"),  # would share U-1x's run folders
])
def test_headroom_allocation_names(tmp_path, capsys, name, needle):
    cfg = {"base": {"seed": 0, "data": {"name": "digits", "limit": 200, "test_limit": 100},
                    "model": {"name": "resnet20", "precision": "binary", "width_mult": 0.25},
                    "train": {"epochs": 1, "batch_size": 50, "lr": 0.05, "progress": False, "max_batches": 1}},
           "uniform": [0.5, 1.0], "uniform_seeds": 1, "allocation_seeds": 1,
           "allocations": [{"name": name, "group_mult": [2.0, 1.0, 0.5]}]}
    out = tmp_path / "study"
    refused(capsys, headroom.main([_yaml(tmp_path / "hd.yaml", cfg), str(out)]), needle, prefix="error:")
    assert not out.exists() and not (tmp_path / "escape").exists()


def test_uae_report_refusal_writes_nothing(runs, tmp_path, capsys):
    """`uae report --out FILE` with a damaged final.json writes no table and redraws no figure (the figures were
    drawn before final.json was read)."""
    run = _copy(runs, "uae", tmp_path / "run")
    (run / "final.json").write_text(json.dumps({"label": "x"}))
    table = tmp_path / "table3.md"
    before = folder_hash(run)
    refused(capsys, main(["uae", "report", "--runs", str(run), "--out", str(table)]), "is not a UAE final.json")
    assert not table.exists() and folder_hash(run) == before


@pytest.mark.parametrize("module, name, argv", [
    (headroom, "run_study", ["c.yaml", "out"]),
    (hawis_study, "compare", ["compare", "out"]),
    (uae_study, "report", ["report", "out"]),
])
def test_study_driver_ctrl_c_is_one_line(monkeypatch, capsys, module, name, argv):
    """Ctrl-C in a study driver was a KeyboardInterrupt traceback (`cimnas` itself printed one line)."""
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, name, interrupted)
    if module is headroom:
        monkeypatch.setattr(module, "load_config", lambda *a, **k: None)
    assert module.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: interrupted") and "run the same command again" in err[0]


@pytest.mark.parametrize("cls_path, override, needle", [
    ("cimnas.pipelines.uae.config:UAESearchConfig", "seed=-1", "seed must be in 0 .. 2**63 - 1"),
    ("cimnas.pipelines.uae.config:Table1Config", "seeds=[0,-3]", "seeds must be in 0 .. 2**63 - 1"),
    ("cimnas.pipelines.uae.config:UAESearchConfig", "data.seed=9223372036854775808", "data.seed must be in"),
    ("cimnas.pipelines.studies.headroom:HeadroomConfig", "base.seed=-2", "base.seed must be in"),
])
def test_every_config_checks_its_seeds(cls_path, override, needle):
    """One range for every config's seeds (UAE configs took -1 and 2**63 while train and HAWIS refused them)."""
    import importlib

    from cimnas.config import load_config
    from cimnas.errors import CimnasError

    module, name = cls_path.split(":")
    with pytest.raises(CimnasError, match=re.escape(needle)):
        load_config(getattr(importlib.import_module(module), name), None, [override])


@pytest.mark.parametrize("argv, needle", [
    (["energy", "--width-mult", "1e6"], "--width-mult must be in (0, 16]"),  # was 4e12 crossbars, minutes of work
    (["energy", "--width-mult", "0"], "--width-mult must be in (0, 16]"),
])
def test_energy_width_mult_is_bounded(capsys, argv, needle):
    refused(capsys, main(argv), needle)


def test_duplicate_references_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    refused(capsys, main(["hawis", "run", "--config", _yaml(tmp_path / "h.yaml", HAWIS), "--out", str(out),
                          "--set", "retrain.references=[fp,fp]"]), "retrain.references lists a reference twice")
    assert not out.exists()
