"""Super-net: slicing = standalone extraction, BN recalibration, sandwich step, width sampling."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.nn.supernet import SuperNet
from cimnas.nn.widths import WidthSpace, round_channels


def _net(name: str = "resnet20", r_max: float = 2.0, d: int = 4) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet.build(name, in_channels=1, num_classes=10, image_size=8, r_min=0.5, r_max=r_max, d=d)


def _batches(n: int = 3, bs: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(bs, 1, 8, 8, generator=g), torch.randint(0, 10, (bs,), generator=g)) for _ in range(n)]


def test_round_channels_eq8_half_up():
    assert round_channels(16 * 1.25, 8) == 24  # 20 / 8 = 2.5 -> 3 (half-up, not banker's 2)
    assert round_channels(1.0, 4) == 4  # never below d
    assert round_channels(35.9, 4) == 36
    assert round_channels(33.9, 4) == 32  # 8.475 rounds down


def test_max_widths_are_r_max_and_sampling_stays_in_bounds():
    net = _net()
    assert net.max_widths == [round_channels(b * 2.0, 4) for b in net.base_widths]
    assert net.space == WidthSpace(tuple(net.base_widths), r_min=0.5, r_max=2.0, d=4)
    g = torch.Generator().manual_seed(1)
    lo, hi = net.smallest(), net.largest()
    assert hi == net.max_widths and lo == [round_channels(b * 0.5, 4) for b in net.base_widths]
    sp = net.space
    for _ in range(20):
        b2 = sp.sample_nonuniform(g)
        for arch in (sp.sample_uniform(g), b2, sp.morph(b2, g, 0.1)):
            assert all(a <= x <= b and x % 4 == 0 for a, x, b in zip(lo, arch.widths, hi, strict=True))
    sw = net.sandwich_widths(torch.Generator().manual_seed(2), 2)
    assert sw[:2] == [hi, lo] and len(sw) == 4
    assert sw[2:] == [list(a.widths) for a in sp.sandwich(torch.Generator().manual_seed(2), 2)[2:]]


def test_super_net_must_be_built_at_the_space_max_widths():
    net = _net()
    with pytest.raises(CimnasError, match="max_widths"):
        SuperNet(net.model, WidthSpace(tuple(net.base_widths), r_min=0.5, r_max=3.0, d=4))
    with pytest.raises(CimnasError, match="base widths"):
        SuperNet(net.model, WidthSpace(tuple(b + 1 for b in net.base_widths), r_min=0.5, r_max=2.0, d=4))


def test_nn_never_imports_search():
    code = ("import sys, cimnas.nn.supernet, cimnas.nn.widths; "
            "print(sorted(m for m in sys.modules if m.startswith('cimnas.search')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["resnet20", "mlp"])
def test_extract_subnet_gives_identical_outputs(name):
    net = _net(name)
    g = torch.Generator().manual_seed(3)
    widths = list(net.space.sample_nonuniform(g).widths)
    net.recalibrate_bn(widths, _batches(), 3)
    x = torch.rand(8, 1, 8, 8, generator=g)
    with torch.no_grad():
        ref = net(x)
        sub = net.extract_subnet(widths)
        sub.eval()
        out = sub(x)
    assert list(sub.widths) == widths
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.parameters())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_subnet_context_restores_widths_and_validates():
    net = _net()
    full = net.widths()
    with net.subnet(net.smallest()):
        assert net.widths() == net.smallest()
    assert net.widths() == full
    with pytest.raises(CimnasError):
        net.set_widths(net.largest()[:-1])
    with pytest.raises(CimnasError):
        net.set_widths([w + 4 for w in net.largest()])


def test_bn_recalibration_is_cumulative_average_of_batches():
    net = _net("resnet20")
    widths = net.smallest()
    batches = _batches(n=4)
    net.recalibrate_bn(widths, batches, 4)
    bn = net.bn_layers()[0]
    c = widths[0]
    recal_mean = bn.running_mean[:c].clone()
    # hand computation: the first BN sees the first layer's output; cumulative mean of batch means
    first = [m for m in net.model.modules() if hasattr(m, "active_out")][0]
    means = []
    with torch.no_grad(), net.subnet(widths):
        for x, _ in batches:
            h: dict = {}
            hook = first.register_forward_hook(lambda m, i, o, h=h: h.setdefault("o", o))
            net.eval()  # eval: the check itself must not touch the running stats
            net(x)
            hook.remove()
            means.append(h["o"].reshape(h["o"].shape[0], h["o"].shape[1], -1).mean(dim=(0, 2)))
    torch.testing.assert_close(recal_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    assert not net.training
    assert bn.momentum is not None  # restored


def test_sandwich_step_updates_shared_weights_and_rejects_bad_bounds():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x, y = _batches(1)[0]
    loss = net.slimmable_step(x, y, net.sandwich_widths(g, 2), opt)
    assert loss > 0
    changed = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed
    with pytest.raises(CimnasError, match="r_min"):
        SuperNet(net.model, r_min=3.0, r_max=2.0)
    with pytest.raises(CimnasError, match="d must"):
        SuperNet(net.model, d=0)


def test_inplace_distillation_matches_hand_written_step():
    import copy

    import torch.nn.functional as F

    a = _net("mlp")
    b = copy.deepcopy(a)
    x, y = _batches(1)[0]
    widths = [a.largest(), a.smallest()]
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    a.slimmable_step(x, y, widths, opt_a, distill=True)
    # by hand: the largest learns the labels, the smallest the largest's (detached) soft predictions
    b.train()
    b.set_widths(widths[0])
    t = b.model(x)
    F.cross_entropy(t, y).backward()
    b.set_widths(widths[1])
    F.cross_entropy(b.model(x), F.softmax(t.detach(), dim=1)).backward()
    torch.optim.SGD(b.parameters(), lr=0.1).step()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6), k
    # and it is not the plain sandwich step
    c = _net("mlp")
    c.slimmable_step(x, y, widths, torch.optim.SGD(c.parameters(), lr=0.1))
    assert any(not torch.allclose(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values(),
                                                              strict=True))
