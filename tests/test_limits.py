"""Resource limits: estimates on the meta device, one-line refusals, limits raised by environment variables."""

from __future__ import annotations

import pytest

from cimnas.errors import CimnasError
from cimnas.limits import check_model, check_work, model_footprint
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
    with pytest.raises(CimnasError, match=r"parameters, over the limit .*CIMNAS_MAX_PARAMS"):
        check_model(_build(2000.0), (3, 32, 32), 128, "model resnet20")
    monkeypatch.setenv("CIMNAS_MAX_MEMORY_GB", "0.01")
    with pytest.raises(CimnasError, match=r"GiB to train at batch size 128.*CIMNAS_MAX_MEMORY_GB"):
        check_model(_build(1.0), (3, 32, 32), 128, "model resnet20")
    monkeypatch.setenv("CIMNAS_MAX_MEMORY_GB", "64")
    assert check_model(_build(1.0), (3, 32, 32), 128, "model resnet20")["params"] > 0


def test_work_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_work(100, 1000, 1e6, "robustness") == pytest.approx(1e11)
    with pytest.raises(CimnasError, match=r"1,000,000,000 samples .*CIMNAS_MAX_WORK"):
        check_work(10**9, 10_000, 4e7, "robustness")
    monkeypatch.setenv("CIMNAS_MAX_WORK", "1e30")
    check_work(10**9, 10_000, 4e7, "robustness")
    monkeypatch.setenv("CIMNAS_MAX_WORK", "lots")
    with pytest.raises(CimnasError, match="not a number"):
        check_work(1, 1, 1, "x")
