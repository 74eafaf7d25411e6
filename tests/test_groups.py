"""Coupled channel groups (cimnas.nn.groups) and the group-slimmable super-net (cimnas.nn.slimmable).

Checked against hand-derived groups (tests/group_nets.py) and against freshly built narrow models holding the
same sliced weights: a sub-net of the super-net must compute exactly what the narrow network computes, and the
hardware model must charge it exactly the same energy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from group_nets import GROUPS, ConcatNet, InvertedResidual, ResNetLike

pytest.importorskip("torch_pruning")

from cimnas import convert  # noqa: E402
from cimnas.errors import CimnasError  # noqa: E402
from cimnas.hardware.crossbar import load_spec  # noqa: E402
from cimnas.hardware.energy import estimate_model  # noqa: E402
from cimnas.hardware.mapping import map_model  # noqa: E402
from cimnas.nn.groups import derive_groups  # noqa: E402
from cimnas.nn.slimmable import GroupSlimmable, group_space  # noqa: E402
from cimnas.nn.supernet import SuperNet  # noqa: E402

SHAPE = (1, 8, 8)
#: factory widths of each test net, and a narrow sub-net (one width per searchable group, in group order)
FULL = {ResNetLike: dict(a=8, b=8, c=12, d=16), InvertedResidual: dict(a=8, e=24, h=16),
        ConcatNet: dict(a=8, b=12, m=8, hidden=16)}
NARROW = {ResNetLike: dict(a=4, b=8, c=4, d=8), InvertedResidual: dict(a=4, e=12, h=8),
          ConcatNet: dict(a=4, b=4, m=4, hidden=8)}


@pytest.mark.parametrize("cls", list(GROUPS))
def test_groups_match_hand_derivation(cls):
    groups = derive_groups(cls(**FULL[cls]), SHAPE)
    searchable = [groups.groups[i] for i in groups.searchable]
    assert [g.producers for g in searchable] == GROUPS[cls]
    assert groups.base_widths == list(FULL[cls].values())
    fixed = [g for g in groups.groups if g.fixed]
    assert [g.name for g in fixed] == ["fc"] and fixed[0].fixed == "reaches the model output"


def test_depthwise_and_bn_follow_their_group():
    groups = derive_groups(InvertedResidual(), SHAPE)
    expand = groups.groups[groups.searchable[1]]
    layers = {(u.layer, u.dim) for u in expand.uses}
    assert {("expand.0", "out"), ("expand.1", "out"), ("dw.0", "out"), ("dw.1", "out"), ("project.0", "in")} == layers


def test_concat_consumer_reads_both_groups_first_channels():
    groups = derive_groups(ConcatNet(), SHAPE)
    s = groups.slices([3, 5, 4, 16])  # a keeps 3 of 8, b keeps 5 of 12 (at offset 8), mix 4 of 8
    assert s["mix.0"].in_index == (0, 1, 2, 8, 9, 10, 11, 12) and s["mix.0"].inp == 8 and s["mix.0"].out == 4
    assert s["hidden"].inp == 4 * 16 and s["hidden"].in_index is None  # flatten: 4 channels x 4x4 positions
    assert s["a.0"].out == 3 and s["b.0"].out == 5
    assert s["norm"].out_index == (0, 1, 2, 8, 9, 10, 11, 12)


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _copy_sliced(src: dict, narrow: nn.Module, full: dict, small: dict) -> None:
    """The narrow model's tensors = the first entries of the super-net's along every dimension, except the
    concatenation's BN and consumer (ConcatNet.norm, .mix), which read [first a of branch a, first b of b]."""
    with torch.no_grad():
        for key, t in narrow.state_dict().items():
            s = src[key]
            if key == "mix.0.weight":
                s = torch.cat([s[:, : small["a"]], s[:, full["a"]: full["a"] + small["b"]]], 1)
            elif key.startswith("norm.") and t.dim():
                s = torch.cat([s[: small["a"]], s[full["a"]: full["a"] + small["b"]]])
            t.copy_(s[tuple(slice(0, n) for n in t.shape)] if t.dim() else s)


@pytest.mark.parametrize("precision", ["float", "binary"])
@pytest.mark.parametrize("cls", list(GROUPS))
def test_subnet_equals_fresh_narrow_model(cls, precision):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = cls(**FULL[cls])
    _randomize_bn(model, gen)
    convert(model, default=precision)
    net = GroupSlimmable(model, SHAPE)
    narrow = cls(**NARROW[cls])
    _copy_sliced(model.state_dict(), narrow, FULL[cls], NARROW[cls])
    convert(narrow, default=precision)
    net.set_widths(list(NARROW[cls].values()))
    x = torch.rand((5, *SHAPE), generator=gen)
    for train in (False, True):  # running statistics, then batch statistics
        net.train(train)
        narrow.train(train)
        with torch.no_grad():
            torch.testing.assert_close(net(x), narrow(x), rtol=0, atol=1e-6)
    again = cls(**NARROW[cls])  # the batch-statistics pass updated the same running statistics in both
    _copy_sliced(model.state_dict(), again, FULL[cls], NARROW[cls])
    for key, t in again.state_dict().items():
        torch.testing.assert_close(t, narrow.state_dict()[key], rtol=0, atol=1e-6, msg=key)
    assert derive_groups(model, SHAPE).base_widths == list(FULL[cls].values())  # traced as built, then
    torch.testing.assert_close(net(x), narrow(x), rtol=0, atol=1e-6)  # left sliced as it was
    spec = load_spec("mnsim-default", [])
    assert estimate_model(model, SHAPE, spec) == estimate_model(narrow, SHAPE, spec)  # the wrapped model, unprefixed
    net.set_widths(list(FULL[cls].values()))  # back to the full model: nothing sliced
    assert all(getattr(m, "active_out", None) is None and getattr(m, "in_index", None) is None
               for m in model.modules())


def test_supernet_sandwich_step_recalibration_and_extraction():
    torch.manual_seed(0)
    model = InvertedResidual()
    convert(model, default="binary")
    net = GroupSlimmable(model, SHAPE)
    space = group_space(net, r_min=0.5, r_max=1.0, d=4)
    assert list(space.max_widths().widths) == [8, 24, 16] and list(space.min_widths().widths) == [4, 12, 8]
    sup = SuperNet(net, space)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand((16, *SHAPE), generator=gen), torch.randint(0, 10, (16,), generator=gen)
    opt = torch.optim.SGD(sup.parameters(), lr=0.1)
    before = model.dw[0].weight.detach().clone()
    loss = sup.slimmable_step(x, y, sup.sandwich_widths(gen, 2), opt)
    assert torch.isfinite(torch.as_tensor(loss)) and not torch.equal(before, model.dw[0].weight)
    small = sup.smallest()
    assert sup.recalibrate_bn(small, [(x, y)], 1) == 1
    bn = model.dw[1]  # statistics re-estimated for the 12 active channels only, the others reset
    assert bool((bn.running_mean[:12] != 0).all()) and bool((bn.running_mean[12:] == 0).all())
    assert bool((bn.running_var[12:] == 1).all())
    sub = sup.extract_subnet(small)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), sup(x), rtol=0, atol=0)
    assert sub.widths == small and sup.widths() == small


def test_refusals_name_the_layer(monkeypatch):
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.g, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.g(self.a(x)).mean((2, 3)))

    with pytest.raises(CimnasError, match="layer 'g' is a grouped convolution"):
        derive_groups(Grouped(), SHAPE)

    class Chunked(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(4, 4, 3), nn.Linear(8, 2)

        def forward(self, x):
            u, v = torch.chunk(self.a(x), 2, 1)
            return self.fc(torch.cat([self.b(u), v[:, :, 1:-1, 1:-1]], 1).mean((2, 3)))

    with pytest.raises(CimnasError, match="'a'.*a split / chunk"):
        derive_groups(Chunked(), SHAPE)

    class ZeroPadShortcut(nn.Module):  # option A: subsample, zero-pad the channels, add
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 3, 2, 1), nn.Linear(8, 2)

        def forward(self, x):
            x = self.a(x)
            sc = x[:, :, ::2, ::2]
            sc = torch.cat([sc, sc.new_zeros(sc.shape)], 1)
            return self.fc((self.b(x) + sc).mean((2, 3)))

    with pytest.raises(CimnasError, match="only some output channels of layer '[ab]'.*zero-padded"):
        derive_groups(ZeroPadShortcut(), SHAPE)

    class Shuffled(nn.Module):  # ShuffleNet's channel shuffle: view, transpose, view
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Linear(4, 2)

        def forward(self, x):
            y = self.a(x)
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
            return self.fc(self.b(y).mean((2, 3)))

    with pytest.raises(CimnasError, match="'a' pass through a TransposeBackward.*channel shuffle"):
        derive_groups(Shuffled(), SHAPE)

    class Merged(nn.Module):  # a grouped sum over a view that splits the channels
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Linear(4, 2)

        def forward(self, x):
            y = self.a(x)
            n, c, h, w = y.shape
            return self.fc(self.b(y.view(n, 2, c // 2, h, w).sum(1)).mean((2, 3)))

    with pytest.raises(CimnasError, match="layer 'b' reads several channels of 'a' at one position"):
        derive_groups(Merged(), SHAPE)

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(CimnasError, match="forward failed on an input of shape"):
        derive_groups(Broken(), SHAPE)
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(CimnasError, match=r"cimnas\[groups\]"):
        derive_groups(ResNetLike(), SHAPE)


def test_digital_layers_fix_their_groups_and_space_checks():
    model = ResNetLike()
    convert(model, {"stem.0": "digital"}, default="binary")
    net = GroupSlimmable(model, SHAPE)
    fixed = {g.name: g.fixed for g in net.groups.groups if g.fixed}
    assert fixed["stem.0"] == "touches the digital layer 'stem.0'"
    assert net.base_widths == [8, 12, 16]
    spec = load_spec("mnsim-default", [])  # the hardware model sees the digital layer through the wrapper too
    net.set_widths([4, 8, 8])
    res = estimate_model(net, SHAPE, spec)
    assert res["digital"] == ["model.stem.0"] and res["energy_uj"] == estimate_model(model, SHAPE, spec)["energy_uj"]
    assert len(map_model(net, spec).layers) == 6  # every crossbar layer but the digital stem
    with pytest.raises(CimnasError, match="r_max <= 1"):
        group_space(net, 0.5, 2.0, 4)
    with pytest.raises(CimnasError, match="not a multiple of space.d=5"):
        group_space(net, 0.5, 1.0, 5)


def test_spatial_slice_keeps_the_channels():
    class Subsampled(nn.Module):  # a shortcut that subsamples spatially couples the two producers
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, 2, 1), nn.Linear(4, 2)

        def forward(self, x):
            x = self.a(x)
            return self.fc((self.b(x) + x[:, :, ::2, ::2]).mean((2, 3)))

    groups = derive_groups(Subsampled(), SHAPE)
    assert [groups.groups[i].producers for i in groups.searchable] == [("a", "b")]


def test_groups_command(capsys, tmp_path):
    from cimnas.cli import main

    net = tmp_path / "net.py"
    here = str(Path(__file__).parent)
    net.write_text(f"import sys\nsys.path.insert(0, {here!r})\nfrom group_nets import InvertedResidual\n\n"
                   "def build(num_classes):\n    return InvertedResidual(classes=num_classes)\n")
    assert main(["groups", "--model-file", f"{net}:build", "--input-shape", "1x8x8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["groups"]
    assert [tuple(r["producers"]) for r in rows if r["searchable"]] == GROUPS[InvertedResidual]
    assert main(["groups", "--model-file", f"{net}:build", "--input-shape", "1x8x8", "--keep-digital", "first"]) == 0
    out = capsys.readouterr().out
    assert "2 searchable channel groups (of 4)" in out and "[fixed: touches the digital layer 'stem.0']" in out
    assert main(["groups", "--input-shape", "1x8x8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs your network" in err[0]


@pytest.mark.parametrize("factory", ["resnet18", "mobilenet_v2", "vgg11_bn", "concat_cnn"])
def test_outside_architectures_slice_and_cost_less(factory):
    """The conversion tests' plain-PyTorch ResNet-18, MobileNetV2, VGG-11-BN and Inception-style CNN: every
    sub-net of the group space runs, and the narrowest costs less energy than the built network."""
    import zoo_models

    torch.manual_seed(0)
    model = getattr(zoo_models, factory)(num_classes=10, in_channels=3)
    convert(model, default="binary")
    shape = (3, 32, 32)
    net = GroupSlimmable(model, shape)
    space = group_space(net, r_min=0.5, r_max=1.0, d=2)
    spec = load_spec("mnsim-default", [])
    full = estimate_model(model, shape, spec)["energy_uj"]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, *shape), generator=gen)
    net.eval()
    for arch in (space.min_widths(), space.sample_nonuniform(gen)):
        net.set_widths(list(arch.widths))
        with torch.no_grad():
            assert net(x).shape == (2, 10)
    net.set_widths(list(space.min_widths().widths))
    assert 0 < estimate_model(model, shape, spec)["energy_uj"] < full
