"""UAE output-change analysis: Eq. 3-4 sampling and the Gaussian fit of Eq. 5-6."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.hardware.defects import GaussianNoise
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.quantizers import DoReFaActivation, FixedPoint
from cimnas.pipelines.uae.analysis import WeightNoise, gaussian_fit_stats, output_change, output_change_loop


def _tiny_cnn(quantized: bool = False) -> nn.Module:
    torch.manual_seed(0)
    wq = (lambda: FixedPoint(1, 5)) if quantized else (lambda: None)
    aq = (lambda: DoReFaActivation(6)) if quantized else (lambda: None)
    m = nn.Sequential(
        QConv2d(1, 4, 3, weight_quantizer=wq()), nn.BatchNorm2d(4), nn.ReLU(),
        QConv2d(4, 4, 3, stride=2, input_quantizer=aq(), weight_quantizer=wq()), nn.ReLU(), nn.Flatten(),
        QLinear(4 * 4 * 4, 5, input_quantizer=aq(), weight_quantizer=wq()),
    )
    with torch.no_grad():  # non-trivial BN statistics so eval mode matters
        m[1].running_mean.uniform_(-0.2, 0.2)
        m[1].running_var.uniform_(0.5, 2.0)
    m.train()
    return m


def _x() -> torch.Tensor:
    return torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- Eq. 3-4
def test_linear_model_output_change_matches_hand_computation():
    # One FC layer, no bias: O_CG = N x, so each element is exactly N(0, sigma^2 |x|^2).
    lin = QLinear(3, 2, bias=False)
    x = torch.tensor([[1.0, 2.0, 2.0]])  # |x| = 3
    o = output_change(lin, x, sigma=0.1, samples=4000, seed=3)
    assert o.shape == (4000, 2)
    # sample std of 4000 normals: relative standard error 1/sqrt(2*4000) ~ 1.1%; allow 5 of them
    assert torch.allclose(o.std(0), torch.full((2,), 0.3), rtol=0.06)
    assert o.mean(0).abs().max() < 5 * 0.3 / math.sqrt(4000)


@pytest.mark.parametrize("quantized", [False, True])
def test_vectorised_equals_per_sample_loop_on_the_same_weights(quantized):
    model = _tiny_cnn(quantized)
    x = _x()
    noise = WeightNoise(model, GaussianNoise(0.05))
    weights = noise.draw_weights(6, torch.Generator().manual_seed(0))
    # reference: the plain forward (quantizers as autograd Functions) with each sample's weights
    model.eval()
    with torch.no_grad():
        o_ori = model(x)[0]
        ref = []
        for j in range(6):
            for m, w in zip(noise.layers, weights, strict=True):
                m.weight_override = w[j]
            ref.append(model(x)[0] - o_ori)
        for m in noise.layers:
            m.weight_override = None
    model.train()
    # the vectorised path draws exactly these weights for seed 0 and one chunk of 6
    got = output_change(model, x, sigma=0.05, samples=6, seed=0, chunk=6)
    assert torch.allclose(got, torch.stack(ref), atol=1e-5)
    # the model is left as it was: train mode, no overrides
    assert model.training and all(m.weight_override is None for m in noise.layers)


def test_sigma_zero_gives_zero_change_and_seed_reproducible():
    model = _tiny_cnn(quantized=True)
    x = _x()
    assert output_change(model, x, sigma=0.0, samples=8).abs().max() < 1e-5
    a = output_change(model, x, sigma=0.03, samples=50, seed=7, chunk=16)
    b = output_change(model, x, sigma=0.03, samples=50, seed=7, chunk=16)
    c = output_change(model, x, sigma=0.03, samples=50, seed=8, chunk=16)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_loop_and_vectorised_agree_in_distribution():
    model = _tiny_cnn()
    x = _x()
    v = output_change(model, x, sigma=0.05, samples=2000, seed=0)
    loop = output_change_loop(model, x, sigma=0.05, samples=2000, seed=1)
    # std of a std estimate from 2000 samples ~ 1.6%: two independent estimates within 10%
    assert torch.allclose(v.std(0), loop.std(0), rtol=0.1)


def test_noise_modes_scale_as_defined():
    model = _tiny_cnn(quantized=True)
    noise_abs = WeightNoise(model, GaussianNoise(0.1, "absolute"))
    noise_rel = WeightNoise(model, GaussianNoise(0.1, "relative"))
    noise_bs = WeightNoise(model, GaussianNoise(0.1, "bitsliced", cell_bits=2))
    for w, sa, sr, sb in zip(noise_abs.base, noise_abs.stds, noise_rel.stds, noise_bs.stds, strict=True):
        assert sa == pytest.approx(0.1)
        assert sr == pytest.approx(0.1 * float(w.abs().max()))
        # fixed point 1.5: 6 bits, step 2^-5 -> 3 cells of 2 bits, levels 3, significances 1, 4, 16
        assert sb == pytest.approx(0.1 * 2**-5 * 3 * math.sqrt(1 + 16 + 256))
    # drawn noise has the std the mode asks for
    g = torch.Generator().manual_seed(0)
    n = noise_rel.draw_weights(400, g)[0] - noise_rel.base[0]
    assert n.shape == (400, *noise_rel.base[0].shape)  # the batched draw: 400 samples at once
    assert float(n.std()) == pytest.approx(noise_rel.stds[0], rel=0.05)
    # float layer in bitsliced mode: step = max|W| / (2^8 - 1), 4 cells of 2 bits
    lin = QLinear(4, 3)
    s = GaussianNoise(0.1, "bitsliced", cell_bits=2, weight_bits=8).layer_std(lin, lin.weight)
    delta = float(lin.weight.detach().abs().max()) / 255
    assert s == pytest.approx(0.1 * delta * 3 * math.sqrt(1 + 16 + 256 + 4096))


# ---------------------------------------------------------------- Eq. 5-6
def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_fit_statistics_hand_case():
    v = torch.tensor([0.0, 0.0, 0.0, 4.0])  # mean 1, std sqrt(3)
    f = gaussian_fit_stats(v, bins=2)
    assert float(f.mean[0]) == pytest.approx(1.0) and float(f.std[0]) == pytest.approx(math.sqrt(3))
    # bins (-inf, 1], (1, inf): observed 3/4, 1/4; expected 1/2, 1/2
    assert float(f.chi2[0]) == pytest.approx(0.25) and float(f.mse[0]) == pytest.approx(0.0625)
    # 4 bins of 1 std over mean +- 2 std, tails folded: z = -0.577 -> bin 1, z = 1.732 -> bin 3
    f = gaussian_fit_stats(v, bins=4, span=2.0)
    e = [_phi(-1), _phi(0) - _phi(-1), _phi(1) - _phi(0), 1 - _phi(1)]
    o = [0.0, 0.75, 0.0, 0.25]
    chi2 = sum((oi - ei) ** 2 / ei for oi, ei in zip(o, e, strict=True))
    mse = sum((oi - ei) ** 2 for oi, ei in zip(o, e, strict=True)) / 4
    assert float(f.chi2[0]) == pytest.approx(chi2) and float(f.mse[0]) == pytest.approx(mse)


def test_gaussian_data_fits_and_non_gaussian_data_does_not():
    g = torch.Generator().manual_seed(0)
    s, bins = 10_000, 100
    gauss = 0.3 * torch.randn(s, 4, generator=g) + 1.0
    expo = torch.empty(s, 2).exponential_(1.0, generator=g)
    bimodal = torch.randn(s, 2, generator=g) * 0.3 + torch.where(torch.rand(s, 2, generator=g) < 0.5, -1.0, 1.0)
    fg = gaussian_fit_stats(gauss, bins)
    # under a Gaussian, S * chi2 ~ chi-square with about bins - 3 degrees of freedom: mean ~ 0.0097,
    # sd ~ sqrt(2 * 97) / S ~ 0.0014; bound at mean + 7 sd
    bound = (bins + 7 * math.sqrt(2 * bins)) / s
    assert float(fg.chi2.max()) < bound
    assert float(fg.chi2.min()) > (bins - 3 - 7 * math.sqrt(2 * bins)) / s  # and not trivially zero
    assert float(fg.mse.max()) < 1e-5
    for other in (expo, bimodal):
        fo = gaussian_fit_stats(other, bins)
        assert float(fo.chi2.min()) > 10 * bound
    d = fg.to_dict()
    assert len(d["chi2"]) == 4 and d["chi2_mean"] == pytest.approx(float(fg.chi2.mean()))


def test_one_outlier_barely_moves_the_statistic():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(10_000, generator=g)
    base = gaussian_fit_stats(v).chi2_mean
    with_outlier = gaussian_fit_stats(torch.cat([v, torch.tensor([12.0])])).chi2_mean
    assert abs(with_outlier - base) < 0.2 * base
    # whereas bins from min to max of the samples would be swung by it: the outlier's bin then has
    # an expected probability of ~Phi(-11) << 1/S, so its term alone would be (1/S)^2 / E >> 1.
    e_outlier_bin = 1 - _phi(11.0)
    assert (1 / 10_001) ** 2 / max(e_outlier_bin, 1e-300) > 1e3


def test_degenerate_element_and_bad_input():
    v = torch.stack([torch.zeros(100), torch.randn(100, generator=torch.Generator().manual_seed(0))], 1)
    f = gaussian_fit_stats(v, bins=10)
    assert bool(f.degenerate[0]) and float(f.chi2[0]) == 0.0 and float(f.mse[0]) == 0.0
    assert not bool(f.degenerate[1]) and float(f.chi2[1]) > 0
    with pytest.raises(CimnasError, match="bins"):
        gaussian_fit_stats(v, bins=1)
    with pytest.raises(CimnasError, match="samples"):
        gaussian_fit_stats(v[:1], bins=10)
    with pytest.raises(CimnasError, match="NaN"):
        gaussian_fit_stats(torch.tensor([1.0, float("nan")]))
    model = _tiny_cnn()
    with pytest.raises(CimnasError, match="sigma"):
        output_change(model, _x(), sigma=-0.1, samples=10)
    with pytest.raises(CimnasError, match="samples"):
        output_change(model, _x(), sigma=0.1, samples=1)
    with pytest.raises(CimnasError, match="noise mode"):  # the defect's one NOISE_MODES
        output_change(model, _x(), sigma=0.1, samples=10, mode="pink")


# ---------------------------------------------------------------- CLI
@pytest.mark.parametrize("bad", [["--samples", "1"], ["--samples", "-5"], ["--samples", "1000000000000"],
                                 ["--bins", "1"], ["--sigma", "-0.1"], ["--sigma", "nan"], ["--mode", "pink"],
                                 ["--element", "-1"]])
def test_cli_bad_input_is_one_line_exit_2(bad, tmp_path, capsys):
    from cimnas.cli import main

    out = tmp_path / "run"
    assert main(["uae", "analyze", "--dataset", "digits", "--out", str(out), *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cimnas: error:") and "\n" not in err
    assert not out.exists()  # nothing written on bad input


def test_cli_analyze_and_table1_end_to_end(tmp_path, capsys):
    import json

    from cimnas.cli import main

    out = tmp_path / "an"
    rc = main(["uae", "analyze", "--model", "mlp", "--dataset", "digits", "--samples", "300", "--epochs", "1",
               "--train-limit", "300", "--bins", "20", "--out", str(out), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(res["chi2"]) == 10 and len(res["std"]) == 10
    assert res["chi2_mean"] == pytest.approx(sum(res["chi2"]) / 10)
    assert (out / "analysis.json").is_file() and (out / "figures" / "output_change_elem0.png").is_file()
    assert (out / "checkpoints" / "model.pt").is_file() and (out / "run.json").is_file()
    # a second run into the same folder is refused (nothing replaced); --resume re-reports without recomputing
    before = (out / "analysis.json").read_bytes()
    argv = ["uae", "analyze", "--model", "mlp", "--dataset", "digits", "--samples", "300", "--epochs", "1",
            "--train-limit", "300", "--bins", "20", "--out", str(out), "--json"]
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["chi2_mean"] == res["chi2_mean"]
    assert (out / "analysis.json").read_bytes() == before
    # Monte-Carlo work above the limit: the estimate and how to raise it, before any training
    w = tmp_path / "w"
    assert main(["uae", "analyze", "--model", "mlp", "--dataset", "digits", "--samples", "9000000", "--out",
                 str(w)]) == 2
    err = capsys.readouterr().err
    assert "CIMNAS_MAX_MC_WORK=" in err and "weight draws" in err and not (w / "checkpoints").exists()

    cfg = tmp_path / "t1.yaml"
    cfg.write_text(
        "data: {name: digits, limit: 300, test_limit: 50}\nseeds: [0, 1]\ntrain: {epochs: 1}\n"
        "analysis: {samples: 200, bins: 20}\n"
        "rows:\n  - {label: MLP-ReLU, model: mlp, kwargs: {hidden_sizes: [32]}}\n"
        "  - {label: ResNet-56, model: resnet56, data: cifar10}\n")
    t1 = tmp_path / "t1"
    assert main(["uae", "table1", "--config", str(cfg), "--out", str(t1)]) == 0
    table = json.loads((t1 / "table1.json").read_text())
    assert [r["label"] for r in table["rows"]] == ["MLP-ReLU"] and table["rows"][0]["runs"] == 2
    assert any("ResNet-56: skipped" in n for n in table["notes"])
    assert "MLP-ReLU" in (t1 / "table1.md").read_text()
    # a second run needs --resume; a different config in the same folder is refused
    assert main(["uae", "table1", "--config", str(cfg), "--out", str(t1)]) == 2
    assert main(["uae", "table1", "--config", str(cfg), "--out", str(t1), "--resume", "--set",
                 "analysis.bins=30"]) == 2
    assert "analysis.bins" in capsys.readouterr().err
    # adding a seed extends the table: only the new (row, seed) is computed
    runs_before = (t1 / "runs.jsonl").read_text()
    assert main(["uae", "table1", "--config", str(cfg), "--out", str(t1), "--resume", "--set", "seeds=[0,1,2]"]) == 0
    assert (t1 / "runs.jsonl").read_text().startswith(runs_before)
    assert json.loads((t1 / "table1.json").read_text())["rows"][0]["runs"] == 3
