"""Batched Monte-Carlo trials (issue 13 item 3): C trials in one vmapped pass give exactly the accuracies of C
one-by-one trials with the same draws, for every registered model, with and without a crossbar."""

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig, GaussianNoise
from cimnas.hardware.montecarlo import (
    CachedBatches,
    accuracy,
    activation_bytes,
    batched_accuracies,
    evaluate_trials,
    run_trial,
    run_trials,
    trials_per_pass,
    weight_draw,
)
from cimnas.nn.layers import quant_layers
from cimnas.nn.models import MODELS, build_model
from cimnas.nn.overrides import weight_overrides
from cimnas.utils.seed import make_generator

#: Small input shapes per registered model (the ImageNet ResNet-18 needs a larger image).
SHAPES = {"resnet18": (3, 32), "lenet5": (1, 28), "mlp": (1, 8)}


class Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def batches(self, batch_size, shuffle=False, generator=None, augment=False):
        for i in range(0, len(self.y), batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]


def labelled(model, c, hw, n=24, seed=0):
    """Inputs and the clean model's own predictions as labels (clean accuracy 1)."""
    x = torch.rand(n, c, hw, hw, generator=make_generator(seed))
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    return Split(x, y)


def small_model(name):
    c, hw = SHAPES.get(name, (3, 8))
    kw = {}
    if name == "uae_cnn":
        kw = dict(channels=[8, 8], kernels=[3, 1], int_bits=[1, 1], frac_bits=[3, 3], fc_hidden=16)
    torch.manual_seed(0)
    return build_model(name, in_channels=c, num_classes=10, image_size=hw, **kw), c, hw


@pytest.mark.parametrize("name", MODELS.names())
def test_batched_equals_one_by_one_every_model(name):
    model, c, hw = small_model(name)
    split = labelled(model, c, hw)
    noise = [GaussianNoise(0.3, "relative")]
    seq = evaluate_trials(model, split, None, noise, trials=5, seed=4, batch_size=10, trial_batch=1)
    bat = evaluate_trials(model, split, None, noise, trials=5, seed=4, batch_size=10, trial_batch=3)
    assert bat.accs == seq.accs
    assert len(set(seq.accs)) > 1 or seq.accs[0] < 1.0  # the noise does something: the check can fail
    assert all(m.weight_override is None for _, m in quant_layers(model))


def test_batched_equals_one_by_one_on_crossbars():
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=8, precision="binary")
    split = labelled(model, 3, 8, n=30)
    cfg = DefectConfig(sa0_rate=0.0175, sa1_rate=0.0904, variation_sigma=0.2)
    seq = evaluate_trials(model, split, CrossbarSpec(), cfg, trials=4, seed=2, batch_size=16, trial_batch=1)
    bat = evaluate_trials(model, split, CrossbarSpec(), cfg, trials=4, seed=2, batch_size=16, trial_batch=4)
    odd = evaluate_trials(model, split, CrossbarSpec(), cfg, trials=4, seed=2, batch_size=16, trial_batch=3)
    assert seq.accs == bat.accs == odd.accs
    assert seq.mean < 1.0


def test_batched_logits_match_each_override():
    """The vmapped pass computes, per trial, what the model computes under that trial's weights."""
    model, c, hw = small_model("lenet5")
    split = labelled(model, c, hw, n=12)
    batches = CachedBatches(split, 12, "cpu")
    draw = weight_draw(model, [GaussianNoise(0.05)])
    draws = [draw(make_generator(s)) for s in range(3)]
    stacked = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    want = []
    for d in draws:
        with weight_overrides(model, d):
            want.append(accuracy(model, batches))
    assert batched_accuracies(model, stacked, batches) == want
    assert run_trials(model, draw, batches, 9, [0, 1, 2]) == [run_trial(model, draw, batches, 9, t) for t in range(3)]


def test_trials_per_pass_cpu_is_one_and_memory_bound(monkeypatch):
    from cimnas.hardware import montecarlo as mc

    model, c, hw = small_model("lenet5")
    batches = CachedBatches(labelled(model, c, hw, n=8), 8, "cpu")
    assert trials_per_pass(model, batches, 100, "cpu") == 1
    x = batches.batches[0][0]
    act = activation_bytes(model, x)
    assert act > x.numel() * 4  # at least the input and one output
    wbytes = sum(m.weight.numel() * 4 for _, m in quant_layers(model))
    per_trial = 2 * wbytes + act
    monkeypatch.setattr(mc, "free_memory_bytes", lambda device: int(per_trial * 10 / mc.MEMORY_SHARE))
    assert trials_per_pass(model, batches, 100, torch.device("meta")) == 10  # 10 trials fit
    assert trials_per_pass(model, batches, 4, torch.device("meta")) == 4  # never more than asked
    monkeypatch.setattr(mc, "free_memory_bytes", lambda device: 1)
    assert trials_per_pass(model, batches, 100, torch.device("meta")) == 1  # at least one


def test_trial_batch_must_be_positive():
    model, c, hw = small_model("mlp")
    split = labelled(model, c, hw, n=8)
    with pytest.raises(CimnasError, match="trial_batch"):
        evaluate_trials(model, split, None, [GaussianNoise(0.1)], trials=2, seed=0, trial_batch=0)
