"""Device models against their closed forms (fixed seeds, sample-size tolerances), presets, and the ideal path."""

import math

import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DEFECTS, DefectConfig
from cimnas.hardware.devices import DeviceConfig, list_device_presets, load_device
from cimnas.hardware.devices.models import Drift, FiniteLevels, ProgrammingNoise, ReadNoise, poly
from cimnas.hardware.mapping import map_layer
from cimnas.hardware.periphery import adc, dac
from cimnas.nn.layers import QLinear
from cimnas.nn.quantizers import BinaryWeight

SPEC = CrossbarSpec()
GMAX = SPEC.g_max_s


def layer(n_in=400, n_out=64):
    torch.manual_seed(0)
    return map_layer("fc", QLinear(n_in, n_out, bias=False, weight_quantizer=BinaryWeight()), SPEC)


def gen(seed=12345):  # not 0: torch.manual_seed(0) made the weights, and the same stream would correlate
    return torch.Generator().manual_seed(seed)


def test_every_device_model_is_registered_and_ideal_builds_nothing():
    for name in ("levels", "programming_noise", "drift", "relaxation", "read_noise", "ir_drop"):
        assert name in DEFECTS and DEFECTS.create(name).is_identity
    assert DeviceConfig().models(3600.0, True) == []
    assert load_device("ideal").device.models(1e7) == []


def test_read_noise_variance_and_drawn_per_read():
    ml = layer()
    rn = ReadNoise(0.02)
    assert rn.per_read
    gp, gn = rn.perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    d = torch.cat([(gp - ml.g_pos).flatten(), (gn - ml.g_neg).flatten()]).double() / GMAX
    n = d.numel()
    # sample variance of n normals: relative std sqrt(2 / (n - 1)); 5 sigma
    assert abs(d.var().item() / 0.02**2 - 1) < 5 * math.sqrt(2 / (n - 1))
    assert abs(d.mean().item()) < 5 * 0.02 / math.sqrt(n)
    gp2, _ = rn.perturb_conductances(ml, ml.g_pos, ml.g_neg, gen(54321))
    assert not torch.equal(gp, gp2)  # another read, another draw


def test_programming_noise_sigma_follows_its_polynomial():
    ml = layer()
    coeffs = [0.001, 0.03, -0.011]  # sigma(Gmin) = 0.0013 Gmax: clipping at 0 is 7.7 sigma away
    pn = ProgrammingNoise(coeffs)
    gp, _ = pn.perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    on = ml.g_pos == GMAX  # cells at Gmax: sigma = Gmax * poly(1) = 0.02 Gmax
    d = ((gp - ml.g_pos)[on]).double() / GMAX
    expect = poly(torch.tensor(1.0), coeffs).item()
    assert expect == pytest.approx(0.02)
    assert abs(d.std().item() / expect - 1) < 5 / math.sqrt(2 * d.numel())
    off = ~on  # cells at Gmin = Gmax / 100: sigma = Gmax * poly(0.01)
    d_off = ((gp - ml.g_pos)[off]).double() / GMAX
    assert abs(d_off.std().item() / poly(torch.tensor(0.01), coeffs).item() - 1) < 5 / math.sqrt(2 * d_off.numel())


@pytest.mark.parametrize("time_s", [3600.0, 3.15e7])
def test_drift_mean_decay_and_compensation(time_s):
    ml = layer()
    m, s, t0 = 0.05, 0.01, 20.0  # nu >= 0 clipping at 5 sigma: negligible
    dr = Drift(m, s, t0, time_s)
    gp, gn = dr.perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    f = torch.cat([(gp / ml.g_pos).flatten(), (gn / ml.g_neg).flatten()]).double()
    L = math.log((time_s + t0) / t0)
    expect = math.exp(-m * L + 0.5 * s**2 * L**2)  # E[exp(-nu L)], nu ~ N(m, s^2)
    assert abs(f.mean().item() - expect) < 5 * f.std().item() / math.sqrt(f.numel())
    # compensation: one scale per layer restores the total conductance of the calibration read exactly
    cp, cn = Drift(m, s, t0, time_s, compensate=True).perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    assert (cp.sum() + cn.sum()).item() == pytest.approx((ml.g_pos.sum() + ml.g_neg.sum()).item(), rel=1e-5)
    # without spread the compensated chip is the programmed one
    ep, en = Drift(m, 0.0, t0, time_s, compensate=True).perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    assert torch.allclose(ep, ml.g_pos, rtol=1e-5) and torch.allclose(en, ml.g_neg, rtol=1e-5)
    # time 0 draws the same nu but leaves the chip unchanged
    zp, _ = Drift(m, s, t0, 0.0).perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    assert torch.equal(zp, ml.g_pos)


def test_adc_quantization_error_and_clipping_count():
    bits, fs = 4, 30.0
    step = fs / (2**bits - 1)
    x = torch.rand(200_000, generator=gen(), dtype=torch.float64) * fs
    q, clipped = adc(x, bits, fs)
    err = q - x
    assert int(clipped) == 0 and err.abs().max().item() <= step / 2 + 1e-12
    # uniform inputs: error uniform on [-step/2, step/2], variance step^2 / 12
    assert abs(err.var().item() / (step**2 / 12) - 1) < 5 * math.sqrt(2 / x.numel()) * 1.3
    over = torch.tensor([fs - 0.1 * step, fs + 0.4 * step, fs + 0.6 * step, 2 * fs, -step], dtype=torch.float64)
    q2, c2 = adc(over, bits, fs)
    assert int(c2) == 3 and q2.tolist() == [fs, fs, fs, fs, 0.0]  # saturates at full scale, not above
    # LSB of one unit current (full scale unset): integers below 2^b - 1 pass exactly
    ints = torch.arange(0, 15, dtype=torch.float64)
    assert torch.equal(adc(ints, 4)[0], ints)
    assert dac(torch.tensor([0.0, 5.0, 255.0]), 8, 2).tolist() == [0.0, 0.0, 255.0]  # top 2 bits: steps of 64


@pytest.mark.parametrize("n", [2, 5, 16])
def test_finite_levels_count_and_error(n):
    g = SPEC.g_min_s + torch.rand(20_000, generator=gen(), dtype=torch.float64) * (GMAX - SPEC.g_min_s)
    q = FiniteLevels(n).quantize(g, SPEC.g_min_s, GMAX)
    assert len(torch.unique(q)) == n
    step = (GMAX - SPEC.g_min_s) / (n - 1)
    assert (q - g).abs().max().item() <= step / 2 * (1 + 1e-9)
    ml = layer()  # binary weights sit on Gmin / Gmax: exact for every n >= 2
    gp, gn = FiniteLevels(n).perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    assert torch.allclose(gp, ml.g_pos) and torch.allclose(gn, ml.g_neg)


def test_presets_load_with_sources_and_reject_bad_fields(tmp_path):
    assert {"reram-wan2022", "pcm-joshi2020"} <= set(list_device_presets())
    for name in list_device_presets():
        p = load_device(name)
        assert p.sources and p.name == name
    r = load_device("reram-wan2022")  # aihwkit's 1 s fit: sigma(Gmax) = 1.103 uS of 40 uS
    assert poly(torch.tensor(1.0), r.device.programming_sigma_poly).item() * 40 == pytest.approx(1.103, abs=1e-3)
    bad = [(["device.read_sigma=-0.1"], "read_sigma"), (["device.drift_nu_mean=nan"], "finite"),
           (["periphery.adc_bits=0"], "adc_bits"), (["device.nope=1"], "nope"), (["periphery.mode=fast"], "mode")]
    for overrides, word in bad:
        with pytest.raises(CimnasError, match=word):
            load_device("pcm-joshi2020", overrides)
    with pytest.raises(CimnasError, match="unknown device preset"):
        load_device("flash-2030")
    f = tmp_path / "dev.yaml"
    f.write_bytes(b"\x00\x01binary")
    with pytest.raises(CimnasError, match="not YAML"):
        load_device(device_file=f)
    assert DefectConfig().build() == []


def test_relaxation_total_spread_matches_the_fit_at_each_time():
    from cimnas.hardware.devices.models import Relaxation

    r = load_device("reram-wan2022").device
    ml = layer(800, 64)
    on = ml.g_pos == GMAX
    for k, t in enumerate(r.relaxation_times_s):
        rel = Relaxation(r.relaxation_times_s, r.relaxation_sigma_polys, r.programming_sigma_poly, t)
        gp, _ = ProgrammingNoise(r.programming_sigma_poly).perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
        gp, _ = rel.perturb_conductances(ml, gp, ml.g_neg, gen(7))
        d = (gp - ml.g_pos)[on].double() / GMAX
        expect = poly(torch.tensor(1.0), r.relaxation_sigma_polys[k]).item()  # independent increments add up
        assert abs(d.std().item() / expect - 1) < 5 / math.sqrt(2 * d.numel())
    mid = Relaxation(r.relaxation_times_s, r.relaxation_sigma_polys, r.programming_sigma_poly, math.sqrt(86400.0))
    g = torch.tensor([GMAX])  # halfway in ln t between 1 s and 1 day: the mean of the two spreads
    s1 = ProgrammingNoise(r.programming_sigma_poly).sigma(g, GMAX)
    s2 = ProgrammingNoise(r.relaxation_sigma_polys[0]).sigma(g, GMAX)
    assert mid.sigma_at(g, GMAX).item() == pytest.approx(((s1 + s2) / 2).item(), rel=1e-6)
    late = Relaxation(r.relaxation_times_s, r.relaxation_sigma_polys, r.programming_sigma_poly, 3.15e7)
    assert late.sigma_at(g, GMAX).item() == pytest.approx(  # held beyond the last measurement
        ProgrammingNoise(r.relaxation_sigma_polys[-1]).sigma(g, GMAX).item())


def test_ir_drop_by_hand():
    from cimnas.hardware.periphery import IRDrop

    ml = map_layer("fc", QLinear(3, 2, bias=False, weight_quantizer=BinaryWeight()), SPEC)
    r = 2.0
    gp, _ = IRDrop(r).perturb_conductances(ml, ml.g_pos, ml.g_neg, gen())
    # column o = 1 (2 segments from the driver), row 0 of 3 (3 segments to the sense end): 5 segments
    g = ml.g_pos[0, 1, 0].item()
    assert gp[0, 1, 0].item() == pytest.approx(g / (1 + g * r * 5), rel=1e-6)
    assert (gp <= ml.g_pos).all()
