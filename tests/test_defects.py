"""Device defects: stuck-at rates, lognormal median, exactness at zero, registry, validation."""

import math
import typing

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DEFECTS, NOISE_MODES, DefectConfig, DefectModel, GaussianNoise, sample_weight
from cimnas.hardware.mapping import map_layer
from cimnas.nn.layers import QLinear
from cimnas.nn.quantizers import BinaryWeight, DoReFaWeight


def binary_layer(n_in=100, n_out=100, seed=0):
    torch.manual_seed(seed)
    return map_layer("fc", QLinear(n_in, n_out, bias=False, weight_quantizer=BinaryWeight()), CrossbarSpec())


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def within_binomial(count, n, p, z=4.5):
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def test_stuck_at_rates_inside_binomial_interval():
    ml = binary_layer(200, 200)
    spec = ml.spec
    d = DEFECTS.create("stuck_at", sa0=0.0175, sa1=0.0904)
    gp, gn = d.perturb_conductances(ml, ml.g_pos, ml.g_neg, gen(3))
    for g0, g in ((ml.g_pos, gp), (ml.g_neg, gn)):
        n = g.numel()
        # cells at Gmin forced to Gmax by SA0; cells at Gmax forced to Gmin by SA1
        lo, hi = g0 == spec.g_min_s, g0 == spec.g_max_s
        assert within_binomial(int((g[lo] == spec.g_max_s).sum()), int(lo.sum()), 0.0175)
        assert within_binomial(int((g[hi] == spec.g_min_s).sum()), int(hi.sum()), 0.0904)
        assert n == 40000
    # both arrays drawn independently: the fault masks differ
    assert not torch.equal(gp == ml.g_pos, gn == ml.g_neg)


def test_stuck_at_defaults_are_paper_rates():
    d = DEFECTS.create("stuck_at")
    assert (d.sa0, d.sa1) == (0.0175, 0.0904)


def test_lognormal_median_preserved():
    ml = binary_layer(300, 300)
    d = DEFECTS.create("variation", sigma=0.5)
    gp, _ = d.perturb_conductances(ml, ml.g_pos, ml.g_neg, gen(1))
    ratio = (ml.g_pos / gp).flatten()  # = exp(theta) = R'/R0
    n = ratio.numel()
    # median of a lognormal is exp(0) = 1; the sample median's std is ~ 1.2533 * sigma / sqrt(n)
    assert abs(torch.log(ratio).median().item()) < 5 * 1.2533 * 0.5 / math.sqrt(n)
    assert torch.log(ratio).std().item() == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("name,kw", [("variation", {"sigma": 0.0}), ("stuck_at", {"sa0": 0.0, "sa1": 0.0}),
                                     ("gaussian", {"sigma": 0.0}), ("gaussian", {"sigma": 0.0, "mode": "bitsliced"})])
def test_zero_level_is_exact(name, kw):
    ml = binary_layer()
    d = DEFECTS.create(name, **kw)
    assert torch.equal(sample_weight(ml, [d], gen()), ml.read_weight())
    assert torch.equal(ml.read_weight(), ml.layer.quantized_weight().detach())


def test_gaussian_modes():
    ml = binary_layer(300, 300)
    w0 = ml.read_weight()
    w_abs = sample_weight(ml, [DEFECTS.create("gaussian", sigma=0.04)], gen())
    assert (w_abs - w0).std().item() == pytest.approx(0.04, rel=0.03)
    w_rel = sample_weight(ml, [DEFECTS.create("gaussian", sigma=0.1, mode="relative")], gen())
    assert (w_rel - w0).std().item() == pytest.approx(0.1 * w0.abs().max().item(), rel=0.03)


def test_bitsliced_noise_scaled_by_significance():
    torch.manual_seed(0)
    layer = QLinear(200, 200, bias=False, weight_quantizer=DoReFaWeight(4))
    ml = map_layer("fc", layer, CrossbarSpec(bits_per_cell=1))
    codes0 = ml.read_weight() / ml.scale
    codes1 = sample_weight(ml, [DEFECTS.create("gaussian", sigma=0.05, mode="bitsliced")], gen()) / ml.scale
    # slice i contributes N(0, 0.05) * 2^i -> total std 0.05 * sqrt(1 + 4 + 16 + 64)
    assert (codes1 - codes0).std().item() == pytest.approx(0.05 * math.sqrt(85), rel=0.03)


def test_bitsliced_sigma_is_full_conductance_range():
    # 2 bits per cell: sigma is in units of a cell's full range Gmax - Gmin = 3 level steps, so in
    # integer codes slice i's error is 3 * sigma * 4^i -> std 3 * 0.05 * sqrt(1 + 16) (not 0.05 * sqrt(17))
    torch.manual_seed(0)
    layer = QLinear(200, 200, bias=False, weight_quantizer=DoReFaWeight(4))
    ml = map_layer("fc", layer, CrossbarSpec(bits_per_cell=2))
    assert ml.slices == 2
    codes0 = ml.read_weight() / ml.scale
    codes1 = sample_weight(ml, [DEFECTS.create("gaussian", sigma=0.05, mode="bitsliced")], gen()) / ml.scale
    # 40000 samples: the sample std's relative error is ~ 1 / sqrt(2 * 40000) = 0.35 %
    assert (codes1 - codes0).std().item() == pytest.approx(3 * 0.05 * math.sqrt(17), rel=0.02)
    # same definition as the UAE output-change analysis (bitsliced mode, cell_bits = 2)
    w_std = GaussianNoise(0.05, "bitsliced", cell_bits=2).layer_std(layer, layer.quantized_weight().detach())
    w1 = sample_weight(ml, [DEFECTS.create("gaussian", sigma=0.05, mode="bitsliced")], gen(1))
    assert (w1 - ml.read_weight()).std().item() == pytest.approx(w_std, rel=0.02)


def test_same_generator_seed_same_draw():
    ml = binary_layer()
    ds = DefectConfig(sa0_rate=0.02, sa1_rate=0.05, variation_sigma=0.2).build()
    assert torch.equal(sample_weight(ml, ds, gen(7)), sample_weight(ml, ds, gen(7)))
    assert not torch.equal(sample_weight(ml, ds, gen(7)), sample_weight(ml, ds, gen(8)))


@pytest.mark.parametrize("cfg", [dict(sa0_rate=-0.1), dict(sa1_rate=1.5), dict(variation_sigma=-1),
                                 dict(gaussian_sigma=-0.1), dict(sa0_rate=0.6, sa1_rate=0.6),
                                 dict(gaussian_mode="weird")])
def test_defect_config_validation(cfg):
    with pytest.raises(CimnasError):
        DefectConfig(**cfg).validate()


def test_registry_entries_are_defect_models():
    for name in DEFECTS.names():
        d = DEFECTS.create(name)
        assert isinstance(d, DefectModel)
        ml = binary_layer(10, 10)
        w = sample_weight(ml, [d], gen())
        assert w.shape == ml.read_weight().shape and torch.isfinite(w).all()


def test_one_noise_modes_tuple_and_batched_draw():
    from cimnas.pipelines.uae import analysis
    from cimnas.pipelines.uae.config import NoiseConfig

    assert NOISE_MODES == ("absolute", "relative", "bitsliced") and GaussianNoise.MODES is NOISE_MODES
    assert analysis.NOISE_MODES is NOISE_MODES
    assert set(typing.get_args(typing.get_type_hints(NoiseConfig)["gaussian_mode"])) == set(NOISE_MODES)
    # the batched draw: n samples of W + N(0, std) per layer in one call, shape (n, *W.shape), mean W, std std
    w = torch.full((50, 40), 0.25)
    out = GaussianNoise.sample_weights([w], [0.1], 30, torch.Generator().manual_seed(0))[0]
    assert out.shape == (30, 50, 40) and torch.equal(w, torch.full((50, 40), 0.25))  # W itself untouched
    assert float((out - w).std()) == pytest.approx(0.1, rel=0.02) and abs(float((out - w).mean())) < 0.002
    again = GaussianNoise.sample_weights([w], [0.1], 30, torch.Generator().manual_seed(0))[0]
    assert torch.equal(out, again)
    with pytest.raises(CimnasError):
        GaussianNoise(float("nan"))
    with pytest.raises(CimnasError):
        GaussianNoise(0.1, "pink")
