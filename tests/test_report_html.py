"""`cimnas report --html` and `cimnas show`: the page in a real headless Chromium (key numbers in its DOM, a
screenshot that is not blank), a self-contained file, bad input noted (page + stderr) with the folders unchanged.

The run folders are synthetic, in the writers' exact formats (tests/reportkit.py), demo-sized (19 layers, 16
episodes). Chromium: Debian's `chromium` package (.ci/run installs it); the browser tests skip only where it is
absent and CI is not set.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

import reportkit
from cimnas.cli import main
from cimnas.reports.html import write_report
from cimnas.reports.summary import show_text

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    out = {"h0": reportkit.hawis_run(root / "h0", seed=0), "h1": reportkit.hawis_run(root / "h1", seed=1),
           "uae": reportkit.uae_run(root / "uae"), "headroom": reportkit.headroom_study(root / "headroom")}
    out["root"] = root
    return out


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below `root` (names and contents: anything written, removed or changed shows)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser tests (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={tmp / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def test_page_in_headless_chromium_shows_the_key_numbers(folders, tmp_path):
    run = folders["root"] / "h0"
    page, problems = write_report([run], tmp_path / "report.html")
    assert problems == []
    url = page.resolve().as_uri()
    dom = chromium(["--dump-dom", url], tmp_path).stdout
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    final, stage_c = folders["h0"]["final"], folders["h0"]["stage_c"]
    assert pct(final["test_accuracy"]) in text  # final accuracy
    assert f"{final['energy_uj']:.4g} µJ" in text  # energy
    for label in ("U-1x", "U-2x", "aligned-1x"):  # the baselines, with their test accuracy and energy
        assert f"baseline {label}" in text
        assert f"{pct(stage_c[label]['test_accuracy'])} at {stage_c[label]['energy_uj']:.4g} µJ" in text
    r = final["robustness"]
    assert f"{pct(r['mean'])} ± {pct(r['std'])}, {pct(r['p5'])}" in text
    for heading in ("Energy vs accuracy", "Search curves", "Per-layer widths and crossbar fill",
                    "Energy per component and per layer", "Robustness", "Config"):
        assert heading in text
    assert dom.count("<img") >= 5  # every figure made it into the DOM
    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1100,2600", url], tmp_path)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2600, 1100)
    assert pixels.std() > 20  # a blank (or one-colour) page has std 0
    assert (pixels < 200).mean() > 0.02  # text and figures cover a visible part of it


def test_page_is_self_contained(folders, tmp_path):
    names = ("h0", "h1", "uae", "headroom")
    page, _ = write_report([folders["root"] / n for n in names], tmp_path / "all.html")
    html = page.read_text()
    srcs = re.findall(r"""\bsrc\s*=\s*['"]?([^'" >]*)""", html, flags=re.I)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in re.findall(r"""\bhref\s*=\s*['"]?([^'" >]*)""", html, flags=re.I))
    outside = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    for needle in ("http://", "https://", "//", "<script", "<link", "<iframe", "url(", "@import", "file:"):
        assert needle not in outside.lower(), needle
    for n in names:  # every folder has its sections
        assert f"{n}: What the run found" in html or f"{n}: headroom study" in html


def test_several_runs_get_a_comparison_with_seed_statistics(folders, tmp_path):
    page, _ = write_report([folders["root"] / "h0", folders["root"] / "h1"], tmp_path / "two.html")
    html = page.read_text()
    assert "Side by side" in html and "HAWIS runs over seeds" in html
    accs = [folders[k]["stage_c"]["U-1x"]["test_accuracy"] for k in ("h0", "h1")]
    m, s = float(np.mean(accs)), float(np.std(accs, ddof=1))
    half = student_t.ppf(0.975, 1) * s / math.sqrt(2)  # hand computation of the 95 % t interval, n = 2
    row = re.search(r"<tr><td>U-1x</td>(.*?)</tr>", html.split("<h2>HAWIS runs over seeds</h2>")[1]).group(1)
    assert f"{100 * m:.2f}%" in row and f"{100 * s:.2f}%" in row and "<td>2</td>" in row
    assert f"[{100 * (m - half):.2f}, {100 * (m + half):.2f}]" in row
    # a `hawis_study spread` file in the run folder: its seeds' mean, std, n and interval
    spread = {"widths": [16], "accuracies": {"U-1x-rep0": 0.80, "U-1x-rep1": 0.84, "U-1x-rep2": 0.85},
              "val_accuracies": {}}
    shutil.copytree(folders["root"] / "h0", tmp_path / "h0s")
    (tmp_path / "h0s" / "spread_U-1x.json").write_text(json.dumps(spread))
    html = write_report([tmp_path / "h0s"], tmp_path / "spread.html")[0].read_text()
    sd = float(np.std([0.80, 0.84, 0.85], ddof=1))
    assert f"<td>spread_U-1x.json</td><td>test</td><td>83.00%</td><td>{100 * sd:.2f}%</td><td>3</td>" in html
    # the headroom table gives n and an interval per model
    page, _ = write_report([folders["root"] / "headroom"], tmp_path / "hr.html")
    vals = folders["headroom"]["rows"][0]["test_acc"]["values"]
    _, lo, hi = (float(np.mean(vals)), *student_t.interval(0.95, len(vals) - 1, loc=np.mean(vals),
                                                           scale=np.std(vals, ddof=1) / math.sqrt(len(vals))))
    assert f"[{100 * lo:.2f}, {100 * hi:.2f}]" in page.read_text()


def test_bad_input_is_noted_and_nothing_in_the_folders_changes(folders, tmp_path, capsys):
    root = tmp_path / "bad"
    shutil.copytree(folders["root"] / "h0", root / "torn")
    with open(root / "torn" / "episodes.jsonl", "a") as f:
        f.write('{"episode": 16, "widths": [1')  # killed mid-write
    (root / "torn" / "final.json").unlink()  # stage C not finished: its sections' source is missing
    (root / "torn" / "stage_c.json").write_text("{not json")  # corrupt
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("not a run")
    shutil.copytree(folders["root"] / "uae", root / "busy")
    shutil.copytree(folders["root"] / "headroom", root / "study")
    (root / "study" / "figures").mkdir()
    (root / "study" / "figures" / "headroom.png").write_bytes(b"not a png")  # a broken figure
    fd = os.open(root / "busy" / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run still being written
    try:
        before = tree_hashes(root)
        out = tmp_path / "bad.html"
        code = main(["report", str(root / "torn"), str(root / "foreign"), str(root / "busy"), str(root / "missing"),
                     str(root / "study"), "--html", str(out)])
    finally:
        os.close(fd)
    assert code == 0
    assert tree_hashes(root) == before  # nothing written, changed or removed in the folders
    err = capsys.readouterr().err.strip().splitlines()
    html = out.read_text()
    expect = ["torn line", "final.json", "stage_c.json could not be read", "not a cimnas run", "still writing",
              "not a folder", "figures/headroom.png is not a PNG file"]
    for e in expect:
        assert any(e in line for line in err), e
        assert e in html, e
    assert all(line.startswith("cimnas report: not shown: ") for line in err)  # one line each, no traceback
    assert "Search curves" in html  # what could be read is shown: the 16 complete episodes
    assert "16 episodes" in html
    assert "UAE" in html and "Reward curves" in html  # the busy run's records so far
    assert "headroom study" in html and "95 % CI of the mean" in html  # the study's table despite its figure
    # nothing at all to show (a mistyped path): a one-line error, exit 2, no page
    assert main(["report", str(root / "foreign"), str(root / "missing"), "--html", str(tmp_path / "none.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a cimnas run" in err[0] and "no page written" in err[0]
    assert not (tmp_path / "none.html").exists()


def test_report_modules_import_no_model_search_pipeline_or_hardware_code():
    code = ("import sys, cimnas.reports.html, cimnas.reports.html_runs, cimnas.reports.html_studies, "
            "cimnas.commands.report; print(sorted(m for m in sys.modules if m.startswith(('cimnas.nn', "
            "'cimnas.search', 'cimnas.pipelines', 'cimnas.hardware', 'cimnas.data', 'cimnas.train'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_show_prints_what_the_run_found(folders, capsys):
    text, problems = show_text(str(folders["root"] / "h0"), use_rich=False)
    final = folders["h0"]["final"]
    assert problems == []
    assert pct(final["test_accuracy"]) in text and f"{final['energy_uj']:.4g} µJ" in text
    assert "baseline U-1x" in text
    assert main(["show", str(folders["root"] / "uae")]) == 0
    assert pct(folders["uae"]["clean_acc"]) in capsys.readouterr().out
    assert main(["show", str(folders["root"])]) == 2  # not a run: one-line error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a cimnas run" in err[0]


def test_real_hawis_run_renders_every_section(tmp_path):
    """A tiny real pipeline run (the formats as written, tensorboard on): stage C's energy_detail adds up to the
    model's energy, and the page shows every section with nothing noted as not shown (no aligned baseline here:
    a remark beside the plot, not a problem)."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    import yaml

    from cimnas.pipelines.hawis import load_hawis_config, run_pipeline

    cfg = {"seed": 3, "device": "cpu", "tensorboard": True, "data": {"name": "digits", "limit": 160, "test_limit": 60},
           "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
           "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
           "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2},
           "search": {"episodes": 3, "agent": "random", "env": {"batch_size": 32, "slimmable_epochs": 0.3,
                                                                "candidate_epochs": 0.3, "bn_recal_batches": 1}},
           "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "baselines": [1]},
           "defects": {"trials": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    final = run_pipeline(load_hawis_config(tmp_path / "cfg.yaml", []), out)["final"]
    detail = final["energy_detail"]
    assert sum(detail["components_uj"].values()) == pytest.approx(final["energy_uj"], rel=1e-9)
    assert sum(r["energy_uj"] for r in detail["layers"]) == pytest.approx(final["energy_uj"], rel=1e-9)
    assert all(0 < r["utilization"] <= 1 for r in detail["layers"])
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # episodes and stage A epochs mirrored
    before = tree_hashes(out)
    page, problems = write_report([out], tmp_path / "page.html")
    assert tree_hashes(out) == before
    assert problems == []
    html = page.read_text()
    for heading in ("Search curves", "Per-layer widths and crossbar fill", "Energy per component and per layer",
                    "Robustness", "Config"):
        assert f"<h2>{heading}</h2>" in html
    assert f"{100 * final['test_accuracy']:.2f}%" in html


def test_show_with_rich_when_installed(folders):
    pytest.importorskip("rich", reason="rich is optional (plain text without it)")
    text, _ = show_text(str(folders["root"] / "h0"), use_rich=True)
    assert pct(folders["h0"]["final"]["test_accuracy"]) in text


def test_aligned_study_shows_seed_statistics_and_baselines(tmp_path):
    res = reportkit.aligned_study(tmp_path / "aligned")
    html = write_report([tmp_path / "aligned"], tmp_path / "a.html")[0].read_text()
    test = res["values"]["ddpg-s0"]["test"]
    m, s = float(np.mean(test)), float(np.std(test, ddof=1))
    lo, hi = student_t.interval(0.95, len(test) - 1, loc=m, scale=s / math.sqrt(len(test)))  # by hand
    row = re.search(r"<tr><td>ddpg-s0</td>(.*?)</tr>", html).group(1)
    assert f"{m:.2f}%" in row and f"{s:.2f}%" in row and "<td>4</td>" in row and f"[{lo:.2f}, {hi:.2f}]" in row
    d = res["rows"][-1]["test_vs_baseline_paired"]  # the seed-paired interval is shown where the study has it
    assert f"{d['diff_points']:+.2f} [{d['ci95_points'][0]:+.2f}, {d['ci95_points'][1]:+.2f}]" in row
    w = res["rows"][-1]["test_vs_baseline"]
    assert f"[{w['ci95_points'][0]:+.2f}, {w['ci95_points'][1]:+.2f}]" not in row and "paired by training seed" in html
    assert "AU-16-28-56" in row and "no difference detected" in html and html.count("<img") == 1
    arm = re.search(r"<tr><td>ddpg</td>(.*?)</tr>", html).group(1)  # the interval over search seeds, beside the verdict
    assert "+0.70 [-3.10, +4.50]" in arm and "over the search seeds" in html
