"""Every registered model trains one step through `cimnas train` (issue 23's plain bug: LeNet-5 could not be trained
from the CLI at all, because the memory estimate ran a batch of one through BatchNorm1d in training mode).

A new registry entry is tested the day it is added: one batch of 8 synthetic 16x16 images, float precision, and
LeNet-5 at every precision."""

from __future__ import annotations

import json

import pytest

from cimnas.cli import main
from cimnas.nn.models import MODELS

TINY = """\
seed: 0
device: cpu
data: {name: synthetic, limit: 16, test_limit: 8, options: {image_size: 16, channels: 3, train_size: 16,
       test_size: 8}}
train: {epochs: 1, batch_size: 8, eval_batch_size: 8, max_batches: 1, lr: 0.01, progress: false}
"""


#: build options a model cannot do without (its per-layer lists)
OPTIONS = {"uae_cnn": "{channels: [4, 4], kernels: [3, 3], int_bits: [1, 1], frac_bits: [2, 2]}"}


@pytest.mark.parametrize("name, precision", [(n, "float") for n in MODELS.names()]
                         + [("lenet5", "binary"), ("lenet5", "kbit")])
def test_every_model_trains_one_step(tmp_path, capsys, name, precision):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--out", str(out), "--set", f"model.name={name}",
               "--set", f"model.precision={precision}", "--set", f"model.options={OPTIONS.get(name, '{}')}"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    final = json.loads((out / "final.json").read_text())
    assert 0.0 <= final["test_acc"] <= 1.0 and final["params"] > 0
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1]
