"""Stage A's in-place distillation warm-up (`pretrain.distill_warmup`): label-only epochs first, then distillation."""

from __future__ import annotations

import pytest
import torch
import yaml

from cimnas.errors import CimnasError
from cimnas.pipelines.hawis import load_hawis_config, run_pipeline
from cimnas.runs import load_payload

BASE = {
    "seed": 5,
    "device": "cpu",
    "data": {"name": "digits", "limit": 160, "test_limit": 40},
    "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
    "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
    "pretrain": {"epochs": 2, "batch_size": 32, "lr": 0.05, "milestones": [], "max_batches": 2, "n_random": 1,
                 "progress": False},
}


def _stage_a(tmp_path, name: str, **pretrain) -> dict[str, torch.Tensor]:
    data = {**BASE, "pretrain": {**BASE["pretrain"], **pretrain}}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    out = tmp_path / name
    run_pipeline(load_hawis_config(p, []), out, stages=("pretrain",))
    ck = load_payload(out / "checkpoints" / "supernet.pt", {"state_dict": dict})
    return ck["state_dict"]


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_warm_up_as_long_as_stage_a_is_plain_label_training(tmp_path):
    plain = _stage_a(tmp_path, "plain")
    warm_all = _stage_a(tmp_path, "warm_all", inplace_distill=True, distill_warmup=2)
    distilled = _stage_a(tmp_path, "distilled", inplace_distill=True, distill_warmup=0)
    warm_one = _stage_a(tmp_path, "warm_one", inplace_distill=True, distill_warmup=1)
    assert _same(plain, warm_all)  # two label-only epochs: the plain sandwich rule, bit for bit
    assert not _same(plain, distilled)  # distillation changes the smaller sub-nets' targets
    assert not _same(warm_one, plain) and not _same(warm_one, distilled)  # epoch 1 labels, epoch 2 distilled


def test_warm_up_longer_than_stage_a_is_refused(tmp_path):
    data = {**BASE, "pretrain": {**BASE["pretrain"], "distill_warmup": 3}}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(CimnasError, match=r"pretrain\.distill_warmup must be in 0\.\.pretrain\.epochs"):
        load_hawis_config(p, [])
