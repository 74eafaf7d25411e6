"""Uncertainty-aware training (UAE Sec. 4.2) and K-sample evaluation."""

import pytest
import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.layers import QLinear
from cimnas.nn.quantizers import FixedPoint
from cimnas.uae.noise_training import (
    NoiseConfig,
    draw_noise,
    evaluate_under_noise,
    noise_batch_context,
    perturbed_weights,
)


class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

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
    noisy = _train(_model(quant), x, y, noise_batch_context(0.0, "absolute", torch.Generator().manual_seed(1)))
    for a, b in zip(plain.parameters(), noisy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gradient_is_taken_at_the_perturbed_point_and_weights_restored():
    x, y = _data()
    m = _model()
    w0 = [p.detach().clone() for p in m.parameters()]
    g = torch.Generator().manual_seed(5)
    with perturbed_weights(m, 0.1, "absolute", g):
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
    assert torch.allclose(n_rel, 2.0 * n_abs)  # relative: sigma * max|W| = 0.08


def test_k_sample_evaluation():
    x, y = _data(200)
    m = _train(_model(), x, y, steps=12)
    split = _Split(x, y)
    clean, accs = evaluate_under_noise(m, split, k=0, sigma=0.3, generator=torch.Generator().manual_seed(0))
    assert accs == [] and 0 <= clean <= 1
    clean2, accs = evaluate_under_noise(m, split, k=4, sigma=0.3, generator=torch.Generator().manual_seed(0),
                                        batch_size=32)
    assert clean2 == clean and len(accs) == 4 and len(set(accs)) > 1
    # noise held for the whole split: sample 1 equals a manual evaluation with that one noise draw
    g = torch.Generator().manual_seed(0)
    n1 = draw_noise([m[0].weight, m[2].weight], 0.3, "absolute", g)
    with torch.no_grad():
        m[0].weight_override = m[0].weight + n1[0]
        m[2].weight_override = m[2].weight + n1[1]
        acc1 = float((m(x).argmax(1) == y).float().mean())
    m[0].weight_override = m[2].weight_override = None
    assert acc1 == pytest.approx(accs[0])
    # same seed -> same accuracies; sigma = 0 -> every sample equals the clean accuracy
    _, again = evaluate_under_noise(m, split, k=4, sigma=0.3, generator=torch.Generator().manual_seed(0))
    assert again == accs
    _, zero = evaluate_under_noise(m, split, k=3, sigma=0.0, generator=torch.Generator().manual_seed(0))
    assert zero == [clean] * 3
    with pytest.raises(CimnasError):
        evaluate_under_noise(m, split, k=-1, sigma=0.1, generator=torch.Generator())


def test_noise_config_validation():
    with pytest.raises(CimnasError):
        NoiseConfig(sigma=-0.1).validate()
    NoiseConfig(sigma=0.0).validate()
