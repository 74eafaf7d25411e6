"""HAWIS stages A -> B -> C on a network cimnas did not define (model.name PATH.py:FACTORY): the search space is
its coupled channel groups, every episode's energy is the hardware model's on the sliced converted network, and
the searched model's checkpoint loads back sliced as it was trained."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("torch_pruning")

from cimnas.errors import CimnasError  # noqa: E402
from cimnas.nn.models import load_model  # noqa: E402
from cimnas.pipelines.hawis import load_hawis_config, run_pipeline  # noqa: E402

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        """stem -> residual block -> (two branches, concatenated) -> classifier"""

        def __init__(self, in_channels, num_classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.c1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.c2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.a = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8))
            self.b = nn.Sequential(nn.Conv2d(8, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))
            self.fc = nn.Linear(12, num_classes)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(x + self.c2(torch.relu(self.c1(x))))
            x = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            return self.fc(x.mean((2, 3)))

    def net(in_channels, num_classes):
        return Net(in_channels, num_classes)
''')


def _config(tmp_path: Path, **model: object) -> dict:
    (tmp_path / "net.py").write_text(NET)
    return {
        "seed": 1, "device": "cpu",
        "data": {"name": "digits", "limit": 160, "test_limit": 60},
        "model": {"name": f"{tmp_path / 'net.py'}:net", "thermometer": False, "rules": {"first": "digital"},
                  **model},
        "space": {"r_min": 0.5, "r_max": 1.0, "d": 4},
        "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_batches": 1},
        "search": {"episodes": 3, "agent": "ddpg",
                   "agent_options": {"warmup_episodes": 2, "hidden_actor": [8], "hidden_critic": [8],
                                     "batch_size": 2},
                   "env": {"batch_size": 32, "max_batches": 1, "bn_recal_batches": 1, "eval_max_batches": 1,
                           "lam": 0.2}},
        "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "baselines": [0.5], "max_batches": 1},
        "defects": {"trials": 2},
        "report": {"compare_uniform": 1.0},
    }


def _load(tmp_path: Path, data: dict):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_hawis_config(p, [])


def test_stages_a_b_c_on_a_user_cnn(tmp_path):
    out = tmp_path / "run"
    summary = run_pipeline(_load(tmp_path, _config(tmp_path)), out, stages=("pretrain", "search", "retrain"))
    space = json.loads((out / "space.json").read_text())
    # groups by hand: {stem, c2} (residual add; fixed: the stem stays digital), {c1}, {a}, {b}; the concatenation
    # feeds the fixed classifier
    assert space["base_widths"] == [8, 8, 4]
    recs = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(recs) == 3
    lo, hi = [4, 4, 4], [8, 8, 4]
    for r in recs:
        assert all(a <= w <= b and w % 4 == 0 for w, a, b in zip(r["widths"], lo, hi, strict=True))
        assert r["energy_uj"] > 0
    final = summary["final"]
    assert final["widths"] == json.loads((out / "best_arch.json").read_text())["widths"]
    assert final["energy_uj"] > 0 and final["biops"] > 0
    stage_c = json.loads((out / "stage_c.json").read_text())
    assert stage_c["U-0.5x"]["widths"] == [4, 4, 4] and "robustness" in final
    assert stage_c["U-0.5x"]["energy_uj"] < final["uniform_energy_uj"]["U-1x"]
    # the searched model's checkpoint rebuilds sliced (the factory named again, as for any user model)
    model, ck = load_model(out / "checkpoints" / "final_model.pt", model_file=f"{tmp_path / 'net.py'}:net")
    assert model.widths == final["widths"] and ck["arch"]["group_widths"] == final["widths"]
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    assert model(x).shape == (4, 10)


def test_user_model_config_refusals(tmp_path):
    data = _config(tmp_path)
    data["model"]["thermometer"] = True
    with pytest.raises(CimnasError, match="model.thermometer: false"):
        _load(tmp_path, data)
    data = _config(tmp_path, options={"refactor": {"binarize_last": False}})
    with pytest.raises(CimnasError, match="for your network use model.rules"):
        _load(tmp_path, data)
    data = _config(tmp_path)
    data["space"]["r_max"] = 2.0
    with pytest.raises(CimnasError, match="r_max <= 1"):
        run_pipeline(_load(tmp_path, data), tmp_path / "bad", stages=("pretrain",))
    cfg = _load(tmp_path, _config(tmp_path))
    (tmp_path / "net.py").write_text(NET.replace("return Net(in_channels, num_classes)", "raise ValueError('no')"))
    with pytest.raises(CimnasError, match="factory .* raised ValueError: no"):
        run_pipeline(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before the run folder is written
