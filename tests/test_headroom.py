"""Headroom study: matched-energy allocations, the curve difference with its interval, a tiny end-to-end run."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from cimnas.config import from_dict
from cimnas.errors import CimnasError
from cimnas.pipelines.studies.headroom import (
    AllocationConfig,
    Geometry,
    HeadroomConfig,
    curve_difference,
    run_study,
    width_summary,
)


def _cfg(**kw) -> HeadroomConfig:
    data = {"base": {"data": {"name": "digits", "limit": 120},
                     "model": {"name": "resnet20", "precision": "binary"},
                     "train": {"epochs": 1, "batch_size": 64, "progress": False, "max_batches": 1}},
            "uniform": [0.5, 1.0], "uniform_seeds": 2, "allocation_seeds": 1,
            "allocations": [{"name": "wide-first", "group_mult": [2, 1, 0.5]}]}
    data.update(kw)
    cfg = from_dict(HeadroomConfig, data)
    cfg.validate()
    for a in cfg.allocations:
        a.validate()
    return cfg


def test_matched_energy_is_close_to_target() -> None:
    cfg = _cfg()
    geo = Geometry(cfg, SimpleNamespace(in_channels=3, image_size=32, num_classes=10))  # CIFAR-10 shape
    assert [len(g) for g in geo.groups] == [7, 6, 6]  # stem + stage 1, stage 2, stage 3 of ResNet-20
    for a in (AllocationConfig("wide-first", [2, 1, 0.5]), AllocationConfig("hawis", named="hawis-a", match=1.5)):
        widths, e, target = geo.matched(a)
        assert all(w % cfg.d == 0 and w > 0 for w in widths)
        assert abs(math.log(e / target)) < 0.25
    wl = geo.matched(AllocationConfig("wl", [0.5, 1, 2]))[0]
    assert wl[0] < wl[7] < wl[-1]  # narrow first stages, wide last
    with pytest.raises(CimnasError, match="groups of equal base width"):
        geo.matched(AllocationConfig("bad", [1, 2]))


def test_curve_difference_by_hand() -> None:
    uniform = [{"label": "U-1x", "energy_uj": 1.0, "runs": [{"a": 0.70}, {"a": 0.72}]},
               {"label": "U-4x", "energy_uj": 4.0, "runs": [{"a": 0.80}, {"a": 0.82}]}]
    d = curve_difference(uniform, 2.0, [0.80, 0.81, 0.79], "a")  # halfway in log-energy
    assert d["t"] == pytest.approx(0.5)
    assert d["curve"] == pytest.approx(0.76)
    assert d["diff"] == pytest.approx(0.04)
    assert d["ci95"][0] < 0.04 < d["ci95"][1]
    assert not curve_difference(uniform, 8.0, [0.9], "a")["inside_curve"]


def test_tiny_study_end_to_end_and_resume(tmp_path: Path) -> None:
    cfg = _cfg()
    res = run_study(cfg, tmp_path / "s")
    rows = {r["label"]: r for r in res["rows"]}
    assert set(rows) == {"U-0.5x", "U-1x", "wide-first"}
    assert rows["U-1x"]["test_acc"]["n"] == 2 and rows["wide-first"]["test_acc"]["n"] == 1
    assert (tmp_path / "s" / "headroom.md").is_file() and (tmp_path / "s" / "figures" / "headroom.png").is_file()
    md = (tmp_path / "s" / "headroom.md").read_text()
    assert "| wide-first | " in md and md.splitlines()[1] == "|---" * 7 + "|" and "val diff" in md
    before = (tmp_path / "s" / "headroom.json").read_text()
    run_study(cfg, tmp_path / "s")  # every model is read back from its run folder
    assert (tmp_path / "s" / "headroom.json").read_text() == before


def test_headroom_json_is_written_after_every_model(tmp_path: Path, monkeypatch) -> None:
    import cimnas.pipelines.studies.headroom as hr

    cfg = _cfg(uniform_seeds=1, allocations=[])
    seen: list[int] = []
    real_train = hr.train_one

    def train_and_look(task_id, payload, shared):  # before each model: how many rows headroom.json holds
        f = tmp_path / "s" / "headroom.json"
        seen.append(sum(bool(r.get("test_acc")) for r in hr.read_json(f)["rows"]) if f.is_file() else 0)
        return real_train(task_id, payload, shared)

    monkeypatch.setattr(hr, "train_one", train_and_look)

    def no_plot(result, path):
        raise CimnasError("disk full")  # the end of the study fails: the per-model table is already on disk

    monkeypatch.setattr(hr, "plot", no_plot)
    with pytest.raises(CimnasError, match="disk full"):
        run_study(cfg, tmp_path / "s")
    assert seen == [0, 1]  # the second model started after the first one's row was written
    rows = {r["label"]: r for r in hr.read_json(tmp_path / "s" / "headroom.json")["rows"]}
    assert rows["U-0.5x"]["test_acc"]["n"] == 1 and rows["U-1x"]["test_acc"]["n"] == 1


def test_a_resume_reads_every_finished_model_first(tmp_path: Path, monkeypatch) -> None:
    import shutil

    import cimnas.pipelines.studies.headroom as hr

    cfg = _cfg(uniform_seeds=2, allocations=[])
    full = run_study(cfg, tmp_path / "s")
    shutil.rmtree(tmp_path / "s" / "runs" / "U-0.5x" / "seed1")  # an unfinished model early in the plan
    order: list[tuple] = []
    real_train = hr.train_one
    monkeypatch.setattr(hr, "train_one", lambda t, p, sh: (order.append(t), real_train(t, p, sh))[1])
    again = run_study(cfg, tmp_path / "s")
    assert order[-1] == ("U-0.5x", 1) and len(order) == 4  # the one left to train comes after the finished three
    assert again["rows"] == full["rows"]  # same table as the uninterrupted study


@pytest.mark.ray
def test_two_ray_workers_give_the_same_study(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'cimnas[distributed]'")
    from cimnas.parallel import Parallelism

    cfg = _cfg(uniform_seeds=1, allocations=[])
    one = run_study(cfg, tmp_path / "one")
    try:
        two = run_study(cfg, tmp_path / "two", par=Parallelism(workers=2))
    finally:
        ray.shutdown()  # the local cluster this test started: other tests start their own
    assert [r["test_acc"] for r in one["rows"]] == [r["test_acc"] for r in two["rows"]]


def test_fewer_seeds_on_resume_reuse_models_and_a_changed_model_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(allocations=[])
    run_study(cfg, tmp_path / "s")
    fewer = _cfg(allocations=[], uniform_seeds=1)
    res = run_study(fewer, tmp_path / "s")
    assert all(r["test_acc"]["n"] == 1 for r in res["rows"])
    changed = _cfg(allocations=[], uniform_seeds=1)
    changed.base.train.lr = 0.05
    with pytest.raises(CimnasError, match="cannot resume"):
        run_study(changed, tmp_path / "s")


def test_width_summary() -> None:
    u = [16] * 7 + [32] * 6 + [64] * 6
    assert width_summary(u) == "16-16 / 32 / 64"
    assert width_summary([16] + [20] * 6 + [32] * 6 + [56] * 6) == "16-20 / 32 / 56"
    assert width_summary([8] * 7 + [16, 24, 16, 24, 16, 24] + [32] * 6) == "8-8 / 16,24,16,24,16,24 / 32"
    assert width_summary([4, 5, 6]) == "4 5 6"  # not a CIFAR ResNet layout
