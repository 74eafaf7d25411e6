"""Training loop, schedule, run folder and exact resume (tiny local QConv/QLinear model on digits)."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from torch import nn

import cimnas.pipelines.train as tr
from cimnas.config import OptimConfig, load_config
from cimnas.data import load_dataset
from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.regularizers import l2_regularizer
from cimnas.train import evaluate, make_optimizer, make_scheduler, scale_milestones, train_epoch


class Tiny(nn.Module):
    """conv(1->4) -> BN -> flatten -> FC: enough to learn digits a bit within a few epochs."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8):
        super().__init__()
        self.conv = QConv2d(in_channels, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.fc = QLinear(4 * ((image_size + 1) // 2) ** 2, num_classes)
        self.arch_meta = {"name": "tiny", "image_size": image_size}

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=400, test_limit=200)


def test_train_epoch_learns_and_is_seeded(digits):
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        m = Tiny()
        opt = make_optimizer(m, OptimConfig(lr=0.1, momentum=0.9))
        before = evaluate(m, digits.test, device="cpu")
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            stats = train_epoch(m, digits.train, opt, batch_size=32, generator=g, device="cpu", progress=False)
        results.append((before, stats, evaluate(m, digits.test, device="cpu"), m.fc.weight.detach().clone()))
    (b0, s0, a0, w0), (_, s1, a1, w1) = results
    assert s0["samples"] == 400 and 0.0 <= s0["train_acc"] <= 1.0
    assert a0 > max(0.5, b0 + 0.2)  # 10 classes: chance is 0.1
    assert torch.equal(w0, w1) and a0 == a1 and s0 == s1  # same seeds -> same result on CPU


def test_evaluate_matches_hand_count(digits):
    m = Tiny().eval()
    x, y = digits.test.tensors()
    with torch.no_grad():
        ref = float((m(x).argmax(1) == y).float().mean())
    assert evaluate(m, digits.test, batch_size=7, device="cpu") == pytest.approx(ref, abs=1e-7)


def test_regularizer_is_added_to_the_loss(digits):
    torch.manual_seed(0)
    m = Tiny()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: weights stay, so the reported reg is exact
    coef = 0.5
    stats = train_epoch(m, digits.search_eval, opt, batch_size=64, generator=torch.Generator().manual_seed(0),
                        device="cpu", regularizer=lambda model: l2_regularizer(model, coef), progress=False)
    hand = coef * float((m.conv.weight.detach() ** 2).sum() + (m.fc.weight.detach() ** 2).sum())
    assert stats["reg"] == pytest.approx(hand, rel=1e-5)


def test_batch_context_wraps_forward_and_backward(digits):
    """A UAE-style context perturbs weights on enter and restores them before optimizer.step()."""
    torch.manual_seed(0)
    m = Tiny()
    events = []

    @contextlib.contextmanager
    def noisy(model):
        saved = model.fc.weight.detach().clone()
        with torch.no_grad():
            model.fc.weight.add_(1.0)
        events.append("enter")
        yield
        assert model.fc.weight.grad is not None  # backward ran inside the context
        with torch.no_grad():
            model.fc.weight.copy_(saved)
        events.append("exit")

    w_before = m.fc.weight.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    train_epoch(m, digits.search_eval, opt, batch_size=100, generator=torch.Generator().manual_seed(0),
                device="cpu", batch_context=noisy, progress=False)
    assert events == ["enter", "exit"] * digits.search_eval.num_batches(100)
    assert torch.equal(m.fc.weight, w_before)


def test_multistep_schedule_by_hand():
    m = Tiny()
    opt = make_optimizer(m, OptimConfig(lr=0.1))
    sch = make_scheduler(opt, OptimConfig(milestones=[2, 4], gamma=0.1))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert scale_milestones([200, 260, 320], 400, 10) == [5, 6, 8]
    assert scale_milestones([200, 260, 320], 400, 1) == []


# ---------------------------------------------------------------- run folder (model zoo stubbed out)
def _tiny(cfg, splits, seed):
    torch.manual_seed(seed)
    return Tiny(splits.in_channels, splits.num_classes, splits.image_size)


@pytest.fixture
def tiny_models(monkeypatch):
    monkeypatch.setattr(tr, "build_from_config", _tiny)


def small_cfg(tmp_path, *extra):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 0\n"
                    "data: {name: digits, limit: 300, test_limit: 100}\n"
                    "model: {name: resnet20, precision: float}\n"
                    "train: {epochs: 3, batch_size: 32, lr: 0.05, milestones: [2], progress: false}\n")
    return load_config(tr.TrainRunConfig, path, list(extra))


def folder_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_run_folder_files(tmp_path, tiny_models, monkeypatch):
    seen = []
    real_fit = tr.fit
    monkeypatch.setattr(tr, "fit", lambda model, split, *a, **kw: seen.append(
        (len(split), len(kw["eval_split"]))) or real_fit(model, split, *a, **kw))
    final = tr.run_training(small_cfg(tmp_path), tmp_path / "run")
    splits = load_dataset("digits", seed=0, limit=300, test_limit=100)
    assert seen == [(len(splits.search_train), len(splits.search_eval))]  # trains on search_train only
    assert len(splits.search_train) + len(splits.search_eval) == 300
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.05, 0.005])
    assert set(rows[0]) == {"epoch", "loss", "reg", "train_acc", "val_acc", "lr", "time_s"}
    assert final["flops"] == 4 * 9 * 16 + 64 * 10 and final["biops"] == 0  # float conv 4x(3x3)x16 pos + FC
    ck = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert ck["format"] == "cimnas-checkpoint-v2" and ck["epoch"] == 3
    assert ck["dataset"] == {"name": "digits", "in_channels": 1, "image_size": 8, "num_classes": 10}
    assert ck["config"]["seed"] == 0 and ck["config"]["train"]["epochs"] == 3
    assert {"optimizer", "scheduler", "arch", "metrics", "state_dict"} <= set(ck)
    m = Tiny()
    m.load_state_dict(ck["state_dict"])  # val on search_eval, test on test: recomputed by hand
    assert evaluate(m, splits.search_eval, device="cpu") == pytest.approx(rows[-1]["val_acc"]) == final["val_acc"]
    assert evaluate(m, splits.test, device="cpu") == pytest.approx(final["test_acc"])
    assert json.loads((tmp_path / "run" / "run.json").read_text())["kind"] == "train"


def test_refuses_existing_run_without_resume(tmp_path, tiny_models):
    cfg = small_cfg(tmp_path, "train.epochs=1")
    tr.run_training(cfg, tmp_path / "run")
    before = folder_bytes(tmp_path / "run")
    with pytest.raises(CimnasError, match="already holds a train run"):
        tr.run_training(cfg, tmp_path / "run")
    assert folder_bytes(tmp_path / "run") == before


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, tiny_models):
    cfg = small_cfg(tmp_path)
    tr.run_training(cfg, tmp_path / "full")

    def stop_after_two(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.run_training(cfg, tmp_path / "cut", on_epoch_end=stop_after_two)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    final = tr.run_training(cfg, tmp_path / "cut", resume=True)
    a = torch.load(tmp_path / "full" / "checkpoints" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "checkpoint.pt", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    strip = lambda r: {k: v for k, v in json.loads(r).items() if k != "time_s"}  # noqa: E731
    full_rows = [strip(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut_rows = [strip(r) for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert full_rows == cut_rows
    assert final["test_acc"] == json.loads((tmp_path / "full" / "final.json").read_text())["test_acc"]


def test_resume_checks_config_and_checkpoint(tmp_path, tiny_models):
    cfg = small_cfg(tmp_path, "train.epochs=2")
    tr.run_training(cfg, tmp_path / "run")
    with pytest.raises(CimnasError, match="train.lr"):
        tr.run_training(small_cfg(tmp_path, "train.epochs=2", "train.lr=0.2"), tmp_path / "run", resume=True)
    before = folder_bytes(tmp_path / "run")
    with pytest.raises(CimnasError, match="train.epochs=1: 2 epochs are already done"):
        tr.run_training(small_cfg(tmp_path, "train.epochs=1"), tmp_path / "run", resume=True)
    assert folder_bytes(tmp_path / "run") == before  # config.yaml, final.json, metrics: unchanged
    # epochs may grow on resume (and may then differ in eval_batch_size / progress): continue 2 -> 3
    final = tr.run_training(small_cfg(tmp_path, "train.eval_batch_size=7"), tmp_path / "run", resume=True)
    assert final["epochs"] == 3
    assert [json.loads(r)["epoch"] for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert "epochs: 3" in (tmp_path / "run" / "config.yaml").read_text()
    (tmp_path / "run" / "checkpoints" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CimnasError, match="corrupt"):
        tr.run_training(small_cfg(tmp_path), tmp_path / "run", resume=True)
    # --resume on a missing folder starts a fresh run (every command alike)
    assert tr.run_training(small_cfg(tmp_path, "train.epochs=1"), tmp_path / "new", resume=True)["epochs"] == 1


def test_cosine_schedule_cannot_be_extended(tmp_path, tiny_models):
    tr.run_training(small_cfg(tmp_path, "train.epochs=1", "train.schedule=cosine"), tmp_path / "run")
    with pytest.raises(CimnasError, match="cosine schedule was laid out for 1 epochs"):
        tr.run_training(small_cfg(tmp_path, "train.epochs=2", "train.schedule=cosine"), tmp_path / "run",
                        resume=True)


def test_resume_before_first_checkpoint_starts_over(tmp_path, tiny_models):
    cfg = small_cfg(tmp_path, "train.epochs=1")

    def crash(epoch, record):  # simulate a kill between the metrics line and the checkpoint
        (tmp_path / "run" / "checkpoints" / "checkpoint.pt").unlink()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.run_training(cfg, tmp_path / "run", on_epoch_end=crash)
    with pytest.raises(CimnasError, match="already holds a train run"):
        tr.run_training(cfg, tmp_path / "run")
    with pytest.raises(CimnasError, match="seed"):
        tr.run_training(small_cfg(tmp_path, "train.epochs=1", "seed=9"), tmp_path / "run", resume=True)
    final = tr.run_training(cfg, tmp_path / "run", resume=True)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["val_acc"] == final["val_acc"]


def test_results_without_checkpoint_are_not_overwritten(tmp_path, tiny_models):
    tr.run_training(small_cfg(tmp_path, "train.epochs=2"), tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "checkpoint.pt").unlink()
    before = folder_bytes(tmp_path / "run")
    with pytest.raises(CimnasError, match="has results but no checkpoint.pt"):
        tr.run_training(small_cfg(tmp_path, "train.epochs=2"), tmp_path / "run", resume=True)
    assert folder_bytes(tmp_path / "run") == before


def test_config_validation(tmp_path):
    for bad, msg in [("train.epochs=0", "train.epochs"), ("train.milestones=[5,2]", "milestones"),
                     ("data.search_fraction=1.5", "search_fraction"), ("model.widths=[4,-1]", "positive"),
                     ("train.regularizer=l1", "regularizer"), ("data.name=svhn", "svhn"),
                     ("model.name=vgg99", "vgg99"), ("train.lr=fast", "train.lr"), ("train.nope=1", "nope"),
                     ("train.seed=1", "train.seed"), ("device=tpu", "device"), ("seed=-1", "seed")]:
        with pytest.raises(CimnasError, match=msg):
            small_cfg(tmp_path, bad)
    cfg = small_cfg(tmp_path, "seed=5")
    assert cfg.data.resolved_seed(cfg.seed) == 5 and small_cfg(tmp_path, "seed=5", "data.seed=0").data.seed == 0
