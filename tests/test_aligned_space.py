"""The aligned HAWIS width space (`search.aligned: true`): Eq. 8 snapped to crossbar-filling widths."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from cimnas.errors import CimnasError
from cimnas.hardware.align import ArchProbe, aligned_choices
from cimnas.hardware.crossbar import load_spec
from cimnas.nn.widths import WidthSpace
from cimnas.pipelines.hawis import load_hawis_config, run_pipeline

SPACE = WidthSpace((16, 32), r_min=0.5, r_max=2.0, d=4, allowed=((8, 12, 28), (16, 28, 56)))


def test_snaps_eq8_down_to_the_allowed_widths():
    # action 0.5: r = 0.5 + 0.5 * 1.5 = 1.25 -> Eq. 8: 20 and 40 -> largest allowed at or below: 12 and 28
    assert SPACE.widths([0.5, 0.5]).widths == (12, 28)
    # action 1: 32 and 64 -> 28 and 56; action 0: 8 and 16 are allowed themselves
    assert SPACE.widths([1.0, 1.0]).widths == (28, 56)
    assert SPACE.widths([0.0, 0.0]).widths == (8, 16)
    # the bounds (the super-net's) are not snapped: an aligned and a free search share one super-net
    assert SPACE.max_widths().widths == (32, 64) and SPACE.min_widths().widths == (8, 16)
    assert SPACE.uniform_widths(1.0).widths == (16, 32)  # U-kx baselines stay U-kx
    free = WidthSpace((16, 32), r_min=0.5, r_max=2.0, d=4)
    assert free.widths([0.5, 0.5]).widths == (20, 40)


def test_samplers_and_serialisation():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        for arch in (SPACE.sample_uniform(gen), SPACE.sample_nonuniform(gen)):
            assert all(w in a for w, a in zip(arch.widths, SPACE.allowed, strict=True))
    assert WidthSpace.from_dict(json.loads(json.dumps(SPACE.to_dict()))) == SPACE
    assert "allowed" not in WidthSpace((16,)).to_dict()


@pytest.mark.parametrize("allowed", [((8, 13), (16,)), ((8,),), ((), (16,))])
def test_bad_allowed_lists(allowed):
    with pytest.raises(CimnasError):
        WidthSpace((16, 32), d=4, allowed=allowed)


TINY = {
    "seed": 1, "device": "cpu",
    "data": {"name": "digits", "limit": 160, "test_limit": 60},
    "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [96, 96], "bn": True}},
    "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
    "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 2},
    "search": {"episodes": 3, "agent": "random", "aligned": True,
               "env": {"batch_size": 32, "slimmable_epochs": 0.2, "candidate_epochs": 0.2, "bn_recal_batches": 1,
                       "lam": 0.05}},
    "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "baselines": []},
    "defects": {"trials": 1},
}


def test_aligned_search_offers_only_filling_widths(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(TINY))
    cfg = load_hawis_config(p)
    run_pipeline(cfg, tmp_path / "run", stages=("pretrain", "search"))
    space = WidthSpace.from_dict(json.loads((tmp_path / "run" / "space.json").read_text()))
    assert space.allowed is not None
    # the same choices as hardware.align on this model (digits 8x8, thermometer 4 levels: 4 input channels)
    probe = ArchProbe("mlp", load_spec("mnsim-default"), in_channels=1, num_classes=10, image_size=8,
                      precision="binary", refactor=cfg.model.refactor_dict(), hidden_sizes=[96, 96], bn=True)
    assert [list(a) for a in space.allowed] == aligned_choices(probe, [48, 48], [192, 192], 4)
    # hidden widths feed the next FC: 128 rows per read round, so 128 fills the round, and 132..192 start another
    assert 128 in space.allowed[0] and 132 not in space.allowed[0]
    for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines():
        widths = json.loads(line)["widths"]
        assert all(w in a for w, a in zip(widths, space.allowed, strict=True))
