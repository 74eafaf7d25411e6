"""Uncertainty-aware training (UAE Sec. 4.2) and K-sample evaluation, with the hardware model's Gaussian defect."""

import pytest
import torch
from torch import nn

from cimnas.config import OptimConfig
from cimnas.errors import CimnasError
from cimnas.hardware.defects import GaussianNoise
from cimnas.nn.layers import QLinear
from cimnas.nn.quantizers import FixedPoint
from cimnas.pipelines.uae.config import NoiseConfig
from cimnas.pipelines.uae.noise import evaluate_under_noise, noise_batch_context, perturbed_weights
from cimnas.train import fit
from cimnas.utils.seed import derive_seed, make_generator


def draw_noise(weights, sigma, mode, generator):
    """One noise sample per weight, drawn exactly as the Gaussian defect draws it (reference for the tests)."""
    d = GaussianNoise(sigma, mode)
    stds = [d.layer_std(None, w) for w in weights]
    return [s - w for s, w in zip(GaussianNoise.sample_weights([w.detach() for w in weights], stds, None, generator),
                                  weights, strict=True)]


class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def num_batches(self, bs):
        return (len(self.y) + bs - 1) // bs

    def batches(self, batch_size, shuffle=False, generator=None, augment=False):
        order = torch.randperm(len(self.y), generator=generator) if shuffle else torch.arange(len(self.y))
        for i in range(0, len(self.y), batch_size):
            j = order[i:i + batch_size]
            yield self.x[j], self.y[j]


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 16, generator=g)
    y = (x[:, :8].sum(1) > x[:, 8:].sum(1)).long()
    return x, y


def _model(quant=False, seed=0):
    torch.manual_seed(seed)
    wq = (lambda: FixedPoint(1, 5)) if quant else (lambda: None)
    return nn.Sequential(QLinear(16, 12, weight_quantizer=wq()), nn.ReLU(), QLinear(12, 2, weight_quantizer=wq()))


def _train(model, x, y, ctx=None, steps=6):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i in range(steps):
        xb, yb = x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]
        opt.zero_grad()
        with ctx(model) if ctx else torch.enable_grad():
            nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    return model


@pytest.mark.parametrize("quant", [False, True])
def test_sigma_zero_equals_plain_training_bit_for_bit(quant):
    x, y = _data()
    plain = _train(_model(quant), x, y)
    noisy = _train(_model(quant), x, y, noise_batch_context(GaussianNoise(0.0), torch.Generator().manual_seed(1)))
    for a, b in zip(plain.parameters(), noisy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gradient_is_taken_at_the_perturbed_point_and_weights_restored():
    x, y = _data()
    m = _model()
    w0 = [p.detach().clone() for p in m.parameters()]
    g = torch.Generator().manual_seed(5)
    with perturbed_weights(m, GaussianNoise(0.1, "absolute"), g):
        nn.functional.cross_entropy(m(x), y).backward()
    grads = [p.grad.clone() for p in m.parameters()]
    for p, w in zip(m.parameters(), w0, strict=True):  # clean weights untouched, overrides cleared
        assert torch.equal(p, w)
    assert all(layer.weight_override is None for layer in (m[0], m[2]))
    # reference: a copy whose weights *are* W + N (same noise sample), plain backward
    noise = draw_noise([m[0].weight, m[2].weight], 0.1, "absolute", torch.Generator().manual_seed(5))
    ref = _model()
    with torch.no_grad():
        ref[0].weight.add_(noise[0])
        ref[2].weight.add_(noise[1])
    nn.functional.cross_entropy(ref(x), y).backward()
    refg = [p.grad for p in ref.parameters()]
    for a, b in zip(grads, refg, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # and it differs from the clean gradient
    m.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    assert not torch.allclose(m[0].weight.grad, grads[0], atol=1e-6)


def test_noise_statistics_and_relative_mode():
    w = torch.full((200, 100), 0.5)
    w[0, 0] = -2.0
    n_abs = draw_noise([w], 0.04, "absolute", torch.Generator().manual_seed(0))[0]
    n_rel = draw_noise([w], 0.04, "relative", torch.Generator().manual_seed(0))[0]
    # 20000 samples: std estimate within ~3 sigma of its standard error (0.04 / sqrt(2n) relative)
    assert abs(float(n_abs.std()) - 0.04) < 3 * 0.04 / (2 * 20000) ** 0.5
    assert abs(float(n_abs.mean())) < 3 * 0.04 / 20000**0.5
    assert torch.allclose(n_rel, 2.0 * n_abs, atol=1e-6)  # relative: sigma * max|W| = 0.08


def _ev(m, split, k, sigma, seed=0, **kw):
    return evaluate_under_noise(m, split, k=k, noise=GaussianNoise(sigma), seed=seed, **kw)


def test_k_sample_evaluation():
    x, y = _data(200)
    m = _train(_model(), x, y, steps=12)
    split = _Split(x, y)
    clean, accs = _ev(m, split, 0, 0.3)
    assert accs == [] and 0 <= clean <= 1
    clean2, accs = _ev(m, split, 4, 0.3, batch_size=32)
    assert clean2 == clean and len(accs) == 4 and len(set(accs)) > 1
    # noise held for the whole split: trial 1 equals a manual evaluation with that trial's one noise draw
    g = make_generator(derive_seed(0, "mc-trial", 1))
    n1 = draw_noise([m[0].weight, m[2].weight], 0.3, "absolute", g)
    with torch.no_grad():
        m[0].weight_override = m[0].weight + n1[0]
        m[2].weight_override = m[2].weight + n1[1]
        acc1 = float((m(x).argmax(1) == y).float().mean())
    m[0].weight_override = m[2].weight_override = None
    assert acc1 == pytest.approx(accs[1])
    # same seed -> same accuracies, another seed -> others; sigma = 0 -> every sample equals the clean accuracy
    assert _ev(m, split, 4, 0.3)[1] == accs and _ev(m, split, 4, 0.3, seed=1)[1] != accs
    assert _ev(m, split, 3, 0.0)[1] == [clean] * 3
    assert m.training and all(layer.weight_override is None for layer in (m[0], m[2]))  # left as it was
    with pytest.raises(CimnasError):
        _ev(m, split, -1, 0.1)


def test_noise_aware_training_through_fit_restores_clean_weights_before_the_step():
    # fit() with the noise batch_context: the optimiser updates the clean weights with the gradient taken at
    # q(W) + N; with lr -> the same noise stream, a hand-written loop gives the same weights
    x, y = _data()
    split = _Split(x, y)
    cfg = OptimConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.1, momentum=0.0, regularizer="none",
                      schedule="constant", augment=False, progress=False)
    a = _model(quant=True)
    fit(a, split, cfg, device="cpu", seed=3,
        batch_context=noise_batch_context(GaussianNoise(0.05), torch.Generator().manual_seed(9)))
    assert all(layer.weight_override is None for layer in (a[0], a[2]))
    b = _model(quant=True)
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(9)
    from cimnas.train import epoch_generator

    for epoch in range(2):
        for xb, yb in split.batches(16, shuffle=True, generator=epoch_generator(3, epoch)):
            opt.zero_grad()
            with perturbed_weights(b, GaussianNoise(0.05), g):
                nn.functional.cross_entropy(b(xb), yb).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    c = _model(quant=True)  # and noise changes the result compared with plain training
    fit(c, split, cfg, device="cpu", seed=3)
    assert not torch.allclose(a[0].weight, c[0].weight)


def test_bitsliced_noise_in_training_uses_the_quantizer_step():
    # FixedPoint(1, 5): 7-bit integer codes of step 2^-5 -> 2 slices of 4-bit cells:
    # std = sigma * step * 15 * sqrt(1 + 256)
    layer = QLinear(40, 50, bias=False, weight_quantizer=FixedPoint(1, 5))
    d = GaussianNoise(0.02, "bitsliced", cell_bits=4)
    q = layer.weight_quantizer
    _, scale = q.to_integer(layer.active_weight().detach())
    bits = int(q.bits)
    slices = -(-bits // 4)
    expect = 0.02 * float(scale) * 15 * sum(256 ** k for k in range(slices)) ** 0.5
    assert d.layer_std(layer, layer.quantized_weight()) == pytest.approx(expect)
    m = nn.Sequential(layer)
    qw = layer.quantized_weight().detach()
    samples = []
    for i in range(20):
        with torch.no_grad(), perturbed_weights(m, d, torch.Generator().manual_seed(i)):
            samples.append(layer.weight_override - qw)
    # 40000 draws: the sample std is within 2 % of the target
    assert float(torch.stack(samples).std()) == pytest.approx(expect, rel=0.02)


def test_noise_config_validation():
    with pytest.raises(CimnasError):
        NoiseConfig(gaussian_sigma=-0.1).validate()
    with pytest.raises(CimnasError):
        NoiseConfig(gaussian_mode="bitslice").validate()
    NoiseConfig(gaussian_sigma=0.0).validate()
    assert NoiseConfig(gaussian_sigma=0.1, gaussian_mode="relative").defect().mode == "relative"
