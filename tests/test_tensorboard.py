"""Optional TensorBoard logging (`tensorboard: true`, the tensorboard extra): the run folder mirrors every appended
record's numbers as scalars stepped by epoch / episode; without the extra, one line naming it and nothing on disk."""

from __future__ import annotations

import builtins

import pytest

from cimnas.config import load_config
from cimnas.errors import CimnasError
from cimnas.pipelines.train import TrainRunConfig
from cimnas.runs import RunFolder
from cimnas.utils import tensorboard


def test_numbers_and_steps():
    rec = {"episode": 3, "reward": 0.5, "cache_hit": True, "noisy": {"mean": 0.8, "n": 5}, "widths": [1, 2]}
    assert tensorboard.numbers(rec) == {"episode": 3.0, "reward": 0.5, "noisy.mean": 0.8, "noisy.n": 5.0}
    assert tensorboard.step_of(rec, 0) == 3 and tensorboard.step_of({"epoch": 7}, 0) == 7
    assert tensorboard.step_of({"loss": 1.0}, 9) == 9


def test_config_switch_is_off_by_default_and_set_by_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {name: digits}\n")
    assert load_config(TrainRunConfig, path).tensorboard is False
    assert load_config(TrainRunConfig, path, ["tensorboard=true"]).tensorboard is True


def test_run_folder_mirrors_records_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunFolder.open(tmp_path / "run", "train", {"tensorboard": True, "seed": 0}) as run:
        for epoch in (1, 2, 3):
            run.append("metrics.jsonl", {"epoch": epoch, "loss": 1.0 / epoch, "train_acc": 0.1 * epoch})
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("metrics/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [round(e.value, 6) for e in loss] == [1.0, 0.5, round(1 / 3, 6)]
    assert "metrics/epoch" not in acc.Tags()["scalars"]  # the step, not a curve


def test_off_writes_no_tensorboard_folder(tmp_path):
    with RunFolder.open(tmp_path / "run", "train", {"tensorboard": False}) as run:
        run.append("metrics.jsonl", {"epoch": 1, "loss": 1.0})
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_missing_extra_is_one_line_naming_it_and_writes_nothing(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_tensorboard(name, *a, **kw):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError("No module named 'tensorboard'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(CimnasError) as e:
        RunFolder.open(tmp_path / "run", "train", {"tensorboard": True})
    assert str(e.value) == tensorboard.MISSING and "cimnas[tensorboard]" in str(e.value)
    assert not (tmp_path / "run").exists()
