"""UAE search space, fixed-point child CNN, rewards."""

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.models.uae_cnn import build_uae_cnn
from cimnas.search.uae_rewards import accuracy_statistic, canonical_statistic, statistic_quantile, summarize, uae_reward
from cimnas.search.uae_space import ConvChoice, UAEArch, UAESpaceConfig


def test_default_space_is_uae_table2():
    s = UAESpaceConfig()
    s.validate()
    assert s.decision_sizes() == [4, 4, 4, 7] * 6
    assert s.size() == (4 * 4 * 4 * 7) ** 6
    assert s.decision_names()[:4] == ["conv1.channels", "conv1.kernel", "conv1.int_bits", "conv1.frac_bits"]


def test_indices_round_trip_and_json():
    s = UAESpaceConfig()
    idx = [3, 1, 0, 6] + [0, 3, 2, 1] * 5
    arch = s.arch_from_indices(idx)
    assert arch.layers[0] == ConvChoice(64, 3, 0, 6)
    assert arch.layers[1] == ConvChoice(24, 7, 2, 1)
    assert s.indices_of(arch) == idx
    again = UAEArch.from_json(arch.to_json())
    assert again == arch and hash(again) == hash(arch)
    assert arch.key().split("|")[0] == "64-3-0-6"


@pytest.mark.parametrize("key", ["channels", "kernels", "int_bits", "frac_bits"])
def test_empty_choice_list_is_an_error(key):
    s = UAESpaceConfig(**{key: []})
    with pytest.raises(CimnasError, match="empty choice list"):
        s.validate()


def test_bad_space_values():
    with pytest.raises(CimnasError):
        UAESpaceConfig(kernels=[2, 3]).validate()
    with pytest.raises(CimnasError):
        UAESpaceConfig().arch_from_indices([0] * 5)
    with pytest.raises(CimnasError):
        UAESpaceConfig().indices_of(UAEArch(tuple([ConvChoice(25, 3, 0, 0)] * 6)))
    with pytest.raises(CimnasError):
        UAEArch.from_json('{"layers": [{"channels": 3}]}')


@pytest.mark.parametrize("shape", [(1, 8), (1, 28), (3, 32)])
def test_uae_cnn_shapes_and_quantization(shape):
    c, hw = shape
    s = UAESpaceConfig(fc_hidden=32)
    arch = s.arch_from_indices([0, 1, 1, 3] * 6)  # 24 ch, k3, int 1, frac 3
    torch.manual_seed(0)
    m = build_uae_cnn(in_channels=c, num_classes=10, image_size=hw, **s.model_kwargs(arch))
    x = torch.rand(2, c, hw, hw)
    y = m(x)
    assert y.shape == (2, 10)
    convs = [l for l in m.modules() if isinstance(l, QConv2d)]
    fcs = [l for l in m.modules() if isinstance(l, QLinear)]
    assert len(convs) == 6 and len(fcs) == 2
    w = convs[2].quantized_weight()
    step = 2.0**-3
    assert torch.allclose(torch.round(w / step) * step, w)  # on the fixed-point grid
    assert w.min() >= -1.0 and w.max() <= 1.0 - step  # int 1: [-1, 1 - step]
    y.sum().backward()  # straight-through gradients reach the float weights
    assert convs[0].weight.grad is not None and convs[0].weight.grad.abs().sum() > 0


def test_zero_bit_word_gets_one_fraction_bit():
    s = UAESpaceConfig(fc_hidden=16)
    arch = s.arch_from_indices([0, 0, 0, 0] * 6)  # int 0, frac 0
    m = build_uae_cnn(in_channels=1, num_classes=10, image_size=8, **s.model_kwargs(arch))
    q = [l for l in m.modules() if isinstance(l, QConv2d)][0].weight_quantizer
    assert (q.int_bits, q.frac_bits) == (0, 1)


def test_statistics():
    accs = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    assert accuracy_statistic(accs, "mean") == pytest.approx(0.55)
    assert accuracy_statistic(accs, "max") == pytest.approx(1.0)
    # 5th percentile, linear interpolation: 0.1 + 0.05 * 9 * 0.1
    assert accuracy_statistic(accs, "p5") == pytest.approx(0.1 + 0.045)
    assert accuracy_statistic(accs, "q0.05") == accuracy_statistic(accs, "p5")
    assert accuracy_statistic(accs, "p95") == accuracy_statistic(accs, "p5")  # the old name: an alias
    assert canonical_statistic("p95") == "p5" and canonical_statistic("mean") == "mean"
    assert accuracy_statistic(accs, "q0.5") == pytest.approx(0.55)
    assert uae_reward(0.9, [], "p5") == 0.9  # K = 0: clean accuracy
    assert uae_reward(0.9, [0.5, 0.7], "mean", energy=2.0, energy_weight=0.1, energy_ref=4.0) == pytest.approx(0.55)
    s = summarize([0.5, 0.7])  # cimnas.stats.summarize: std with ddof 1, p5 (no p95 key)
    assert s["std"] == pytest.approx(0.1414213, rel=1e-5) and s["p5"] == pytest.approx(0.51) and "p95" not in s
    assert statistic_quantile("mean") is None


@pytest.mark.parametrize("bad", ["q1.5", "q-0.1", "qx", "p50", "average", "qnan", "qinf"])
def test_bad_statistic(bad):
    with pytest.raises(CimnasError):
        statistic_quantile(bad)
