"""Resource limits: estimates on the meta device, one-line refusals, limits raised by environment variables."""

from __future__ import annotations

import pytest

from cimnas.errors import CimnasError
from cimnas.limits import check_mc_work, check_model, check_params, model_footprint
from cimnas.nn.models import build_model


def _build(width_mult: float):
    return lambda: build_model("resnet20", in_channels=3, num_classes=10, image_size=32, width_mult=width_mult,
                               precision="binary")


def test_footprint_counts_parameters_without_allocating() -> None:
    fp = model_footprint(_build(1.0), (3, 32, 32), 128)
    real = sum(p.numel() for p in _build(1.0)().parameters())
    assert fp["params"] == real
    assert fp["activations_per_sample"] > 16 * 32 * 32  # at least the first conv's output


def test_huge_widths_refused_with_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CimnasError, match=r"parameters .*over the limit .*CIMNAS_MAX_PARAMS"):
        check_model(_build(2000.0), (3, 32, 32), 128, "model resnet20")
    monkeypatch.setenv("CIMNAS_MAX_MEMORY_GB", "0.01")
    with pytest.raises(CimnasError, match=r"GiB to train at batch size 128.*CIMNAS_MAX_MEMORY_GB"):
        check_model(_build(1.0), (3, 32, 32), 128, "model resnet20")
    monkeypatch.setenv("CIMNAS_MAX_MEMORY_GB", "64")
    assert check_model(_build(1.0), (3, 32, 32), 128, "model resnet20")["params"] > 0


def test_work_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_mc_work(100, 1000, "robustness") == pytest.approx(1e5)
    with pytest.raises(CimnasError, match=r"1,000,000,000 samples x 100,000 weights .*CIMNAS_MAX_MC_WORK"):
        check_mc_work(10**9, 100_000, "robustness")
    monkeypatch.setenv("CIMNAS_MAX_MC_WORK", "1e30")
    check_mc_work(10**9, 100_000, "robustness")
    for bad in ("lots", "inf", "-1"):
        monkeypatch.setenv("CIMNAS_MAX_MC_WORK", bad)
        with pytest.raises(CimnasError, match="CIMNAS_MAX_MC_WORK"):
            check_mc_work(1, 1, "x")
    with pytest.raises(CimnasError, match="positive integer"):
        check_mc_work(0, 10, "trials")


def test_param_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_params(10, "m") == 10
    monkeypatch.setenv("CIMNAS_MAX_PARAMS", "5")
    with pytest.raises(CimnasError, match="over the limit of 5.*CIMNAS_MAX_PARAMS"):
        check_params(10, "m")


def test_crafted_checkpoint_with_huge_widths_is_refused_before_allocating(tmp_path, monkeypatch) -> None:
    import torch

    from cimnas.nn.models import load_model, model_payload

    small = build_model("mlp", in_channels=1, num_classes=10, image_size=8, precision="float")
    payload = model_payload(small, dataset={"name": "digits"})
    payload["arch"]["widths"] = [10**6, 10**6]  # a crafted description: ~1e12 parameters
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CimnasError, match="parameters .*over the limit"):
        load_model(tmp_path / "evil.pt")
    torch.save(model_payload(small, dataset={"name": "digits"}), tmp_path / "ok.pt")
    assert load_model(tmp_path / "ok.pt")[0] is not None


def test_train_refuses_a_model_over_the_limit_before_the_folder_exists(tmp_path) -> None:
    from cimnas.config import from_dict
    from cimnas.pipelines.train import TrainRunConfig, run_training

    cfg = from_dict(TrainRunConfig, {"data": {"name": "digits", "limit": 100},
                                     "model": {"name": "mlp", "precision": "float", "widths": [200000, 200000]},
                                     "train": {"epochs": 1, "progress": False}})
    with pytest.raises(CimnasError, match="over the limit"):
        run_training(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
