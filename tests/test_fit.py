"""The one training driver: fit() equals a hand-written loop; hooks; resume; non-finite loss stops the run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cimnas.config import OptimConfig
from cimnas.data import load_dataset
from cimnas.errors import CimnasError
from cimnas.nn.models import build_model
from cimnas.nn.overrides import weight_overrides
from cimnas.train import epoch_generator, evaluate, fit, make_optimizer, make_scheduler


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", seed=0, limit=300)


def _model(splits):
    torch.manual_seed(0)
    return build_model("mlp", in_channels=splits.in_channels, num_classes=splits.num_classes,
                       image_size=splits.image_size, precision="float")


def test_fit_equals_plain_loop(splits) -> None:
    cfg = OptimConfig(epochs=2, batch_size=32, lr=0.05, milestones=[1], progress=False, augment=False)
    a = _model(splits)
    b = copy.deepcopy(a)
    fit(a, splits.train, cfg, device="cpu", seed=7)
    opt = make_optimizer(b, cfg)
    sched = make_scheduler(opt, cfg)
    for epoch in range(cfg.epochs):
        b.train()
        for x, y in splits.train.batches(32, shuffle=True, generator=epoch_generator(7, epoch)):
            opt.zero_grad()
            F.cross_entropy(b(x), y).backward()
            opt.step()
        sched.step()
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_resume_from_epoch_equals_uninterrupted(splits) -> None:
    cfg = OptimConfig(epochs=3, batch_size=32, lr=0.05, milestones=[2], progress=False)
    a = _model(splits)
    fit(a, splits.train, cfg, device="cpu", seed=1)
    b = _model(splits)
    opt = make_optimizer(b, cfg)
    sched = make_scheduler(opt, cfg)
    fit(b, splits.train, OptimConfig(**{**cfg.__dict__, "epochs": 1}), device="cpu", seed=1, optimizer=opt,
        scheduler=sched)
    state = copy.deepcopy((b.state_dict(), opt.state_dict(), sched.state_dict()))
    c = _model(splits)
    c.load_state_dict(state[0])
    opt_c = make_optimizer(c, cfg)
    opt_c.load_state_dict(state[1])
    sched_c = make_scheduler(opt_c, cfg)
    sched_c.load_state_dict(state[2])
    fit(c, splits.train, cfg, device="cpu", seed=1, optimizer=opt_c, scheduler=sched_c, start_epoch=1)
    for pa, pc in zip(a.state_dict().values(), c.state_dict().values(), strict=True):
        assert torch.equal(pa, pc)


def test_records_and_callback(splits) -> None:
    seen = []
    cfg = OptimConfig(epochs=2, batch_size=64, lr=0.05, progress=False, max_batches=2)
    recs = fit(_model(splits), splits.train, cfg, device="cpu", seed=0, eval_split=splits.search_eval,
               on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [1, 2] and [r["epoch"] for r in recs] == [1, 2]
    assert all(0.0 <= r["eval_acc"] <= 1.0 and r["loss"] > 0 for r in recs)


def test_nonfinite_loss_stops_before_callback(splits) -> None:
    called = []
    cfg = OptimConfig(epochs=2, batch_size=64, lr=0.05, progress=False, max_batches=1)
    with pytest.raises(CimnasError, match="became nan"):
        fit(_model(splits), splits.train, cfg, device="cpu", seed=0, step=lambda x, y: torch.tensor(float("nan")),
            on_epoch_end=lambda e, r: called.append(e))
    assert called == []


def test_custom_step_and_batch_context(splits) -> None:
    model = _model(splits)
    calls = []

    def step(x, y):
        calls.append(len(y))
        return torch.tensor(1.0)

    cfg = OptimConfig(epochs=1, batch_size=50, progress=False, max_batches=3)
    rec = fit(model, splits.train, cfg, device="cpu", seed=0, step=step)[0]
    assert calls == [50, 50, 50] and rec["loss"] == pytest.approx(1.0)


def test_weight_overrides_restore(splits) -> None:
    from cimnas.nn.layers import quant_layers

    model = _model(splits)
    layers = quant_layers(model)
    clean = evaluate(model, splits.test)
    zeros = [torch.zeros_like(m.weight) for _, m in layers]
    with weight_overrides(model, zeros):
        assert all(m.weight_override is not None for _, m in layers)
        assert evaluate(model, splits.test) < clean or clean < 0.2
    assert all(m.weight_override is None for _, m in layers)
    with pytest.raises(RuntimeError), weight_overrides(model, {layers[0][0]: zeros[0]}):
        raise RuntimeError("boom")
    assert all(m.weight_override is None for _, m in layers)
