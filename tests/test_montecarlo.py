"""Monte-Carlo evaluation: reproducible, no per-batch noise, restores the model, sweeps."""

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig
from cimnas.hardware.montecarlo import CachedBatches, MCResult, accuracy, evaluate_trials, robustness_sweep
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import BinaryActivation, BinaryWeight, Identity


class Split:
    """A tiny in-memory split with the DataSplit.batches interface."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def batches(self, batch_size, shuffle=False, generator=None, augment=False):
        for i in range(0, len(self.y), batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]


def setup():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        QConv2d(1, 8, 3, input_quantizer=Identity(), weight_quantizer=BinaryWeight()),
        torch.nn.Flatten(),
        QLinear(8 * 36, 4, input_quantizer=BinaryActivation(), weight_quantizer=BinaryWeight()),
    ).eval()
    x = torch.rand(96, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)  # labels = the ideal model's predictions -> clean accuracy 1.0
    return net, Split(x, y)


def test_ideal_trials_are_clean():
    net, split = setup()
    r = evaluate_trials(net, split, CrossbarSpec(), DefectConfig(), trials=3, seed=0, batch_size=32)
    assert r.accs == [1.0, 1.0, 1.0] and r.std == 0.0


def test_reproducible_and_restores_model():
    net, split = setup()
    w_before = [m.weight.clone() for m in net if isinstance(m, QConv2d | QLinear)]
    cfg = DefectConfig(sa0_rate=0.05, sa1_rate=0.1, variation_sigma=0.3)
    a = evaluate_trials(net, split, CrossbarSpec(), cfg, trials=5, seed=11, batch_size=32)
    b = evaluate_trials(net, split, CrossbarSpec(), cfg, trials=5, seed=11, batch_size=32)
    assert a.accs == b.accs
    assert a.mean < 1.0 and len(set(a.accs)) > 1  # defects hurt and trials differ
    for m, w in zip([m for m in net if isinstance(m, QConv2d | QLinear)], w_before, strict=True):
        assert m.weight_override is None and torch.equal(m.weight, w)
    assert accuracy(net, CachedBatches(split, 32, "cpu")) == 1.0


def test_noise_drawn_once_per_trial_not_per_batch():
    net, split = setup()
    cfg = DefectConfig(variation_sigma=0.5)
    # the same trial evaluated in 1 batch or in 12 batches gives the same accuracy
    one = evaluate_trials(net, split, CrossbarSpec(), cfg, trials=4, seed=5, batch_size=96)
    many = evaluate_trials(net, split, CrossbarSpec(), cfg, trials=4, seed=5, batch_size=8)
    assert one.accs == many.accs


def test_summary_statistics():
    r = MCResult.from_accs([0.1 * i for i in range(1, 11)])
    assert r.mean == pytest.approx(0.55) and r.min == pytest.approx(0.1) and r.max == pytest.approx(1.0)
    assert r.p5 == pytest.approx(0.145)  # numpy linear interpolation: 0.1 + 0.45 * 0.1
    # cimnas.stats.summarize: std with ddof 1 (sqrt(sum (x - 0.55)^2 / 9) = 0.30277), median, n
    assert r.std == pytest.approx(0.302765, rel=1e-5) and r.median == pytest.approx(0.55) and r.n == 10


def test_weight_level_gaussian_trials_without_a_crossbar():
    from cimnas.hardware.defects import GaussianNoise
    from cimnas.nn.layers import quant_layers
    from cimnas.utils.seed import derive_seed, make_generator

    net, split = setup()
    noise = GaussianNoise(0.5)
    r = evaluate_trials(net, split, None, [noise], trials=4, seed=3, batch_size=32)
    assert len(r.accs) == 4 and len(set(r.accs)) > 1 and r.min <= r.p5 <= r.mean <= r.max
    # trial 2 by hand: one draw from the trial's generator, held for the whole split
    layers = quant_layers(net)
    base = [m.effective_weight().detach() for _, m in layers]
    ws = GaussianNoise.sample_weights(base, noise.layer_stds([m for _, m in layers], base), None,
                                      make_generator(derive_seed(3, "mc-trial", 2)))
    from cimnas.nn.overrides import weight_overrides

    with weight_overrides(net, ws):
        acc = accuracy(net, CachedBatches(split, 96, "cpu"))
    assert acc == r.accs[2]
    assert all(m.weight_override is None for _, m in layers)
    # conductance defects need a crossbar: a one-line error
    with pytest.raises(CimnasError, match="crossbar"):
        evaluate_trials(net, split, None, DefectConfig(sa0_rate=0.1), trials=2, seed=0)


def test_monte_carlo_work_limit(monkeypatch):
    from cimnas.hardware.montecarlo import check_mc_work, model_weights

    net, split = setup()
    n = model_weights(net)
    monkeypatch.setenv("CIMNAS_MAX_MC_WORK", str(10 * n))
    check_mc_work(10, n)
    with pytest.raises(CimnasError, match=f"11 samples x {n:,} weights") as e:
        evaluate_trials(net, split, CrossbarSpec(), DefectConfig(sa1_rate=0.1), trials=11, seed=0)
    assert "CIMNAS_MAX_MC_WORK=" in str(e.value)
    monkeypatch.setenv("CIMNAS_MAX_MC_WORK", "lots")
    with pytest.raises(CimnasError, match="CIMNAS_MAX_MC_WORK"):
        check_mc_work(1, n)
    monkeypatch.delenv("CIMNAS_MAX_MC_WORK")
    with pytest.raises(CimnasError):
        check_mc_work(-5, n)


def test_sweep_structure_and_trend(tmp_path):
    net, split = setup()
    res = robustness_sweep({"a": net}, split, CrossbarSpec(), {"sa0": [0.0, 0.3], "variation": [0.0, 1.0]},
                           trials=3, seed=0, batch_size=48)
    rows = res["kinds"]["sa0"]["models"]["a"]
    assert [r["level"] for r in rows] == [0.0, 0.3] and rows[0]["mean"] == 1.0 and rows[1]["mean"] < 1.0
    from cimnas.reports.robustness_plot import plot_robustness

    p = plot_robustness(res, tmp_path / "r.png")
    assert p.stat().st_size > 1000
