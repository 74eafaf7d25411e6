"""The hardware model on converted outside models: a plain-PyTorch copy of a cimnas zoo model costs exactly what
`cimnas energy --model` says of the zoo model and computes exactly what it computes; Monte-Carlo robustness is
reproducible by seed; grouped layers read back exactly; BN fusion is exact where the structure allows."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cimnas.cli import main
from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.defects import DefectConfig
from cimnas.hardware.energy import estimate_model
from cimnas.hardware.mapping import map_layer
from cimnas.hardware.montecarlo import evaluate_trials
from cimnas.nn.convert import convert
from cimnas.nn.fusion import fuse_model, traced_fusion_pairs
from cimnas.nn.models import build_model
from cimnas.nn.zoo import external_model
from test_montecarlo import Split  # the tiny in-memory split with the DataSplit.batches interface

ZOO = Path(__file__).parent / "zoo_models.py"

# (zoo model, plain copy factory, cimnas energy flags, input shape, conversion default)
PAIRS = [
    ("resnet20", "resnet20_binary_form", ["--bits", "1"], (3, 32, 32), "binary"),
    ("resnet20", "resnet20_plain", ["--bits", "8"], (3, 32, 32), "kbit:8"),
    ("lenet5", "lenet5_plain", ["--bits", "8"], (1, 28, 28), "kbit:8"),
    ("lenet5", "lenet5_plain", ["--bits", "4"], (1, 16, 16), "kbit:4"),
]


def energy_json(capsys, *argv) -> dict:
    assert main(["energy", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("zoo, copy, flags, shape, default", PAIRS)
def test_plain_copy_costs_exactly_the_zoo_model(capsys, zoo, copy, flags, shape, default):
    size = f"{shape[0]}x{shape[1]}x{shape[2]}"
    ref = energy_json(capsys, "--model", zoo, *flags, "--input-shape", size)
    got = energy_json(capsys, "--model-file", f"{ZOO}:{copy}", *flags, "--input-shape", size)
    for key in ("energy_uj", "latency_us", "area_mm2", "crossbars", "tiles", "biops", "flops"):
        assert got[key] == ref[key], key  # exactly, not approximately
    assert [r["name"] for r in got["layers"]] == [r["name"] for r in ref["layers"]]
    assert got["layers"] == ref["layers"]
    assert got["conversion"]["digital"] == [] and set(got["conversion"]["precision"].values()) == {default}


@pytest.mark.parametrize("zoo, copy, flags, shape, default", PAIRS[:3])
def test_plain_copy_computes_exactly_the_zoo_model(zoo, copy, flags, shape, default):
    bits = int(flags[1])
    ref = build_model(zoo, in_channels=shape[0], num_classes=10, image_size=shape[1], seed=0,
                      precision="binary" if bits == 1 else "kbit", bits=bits).eval()
    model = external_model(f"{ZOO}:{copy}", in_channels=shape[0], num_classes=10, image_size=shape[1],
                           default=default)
    model.load_state_dict(ref.state_dict())  # the parameter names are the zoo's
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref(x))


def test_monte_carlo_reproducible_by_seed():
    model = external_model(f"{ZOO}:concat_cnn", in_channels=3, num_classes=4, image_size=8, seed=0,
                           rules={"first": "digital"}, default="kbit:4").eval()
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        split = Split(x, model(x).argmax(1))  # labels = the ideal model's predictions
    spec, defects = CrossbarSpec(), DefectConfig(sa0_rate=0.02, sa1_rate=0.1, variation_sigma=0.5)
    a = evaluate_trials(model, split, spec, defects, trials=4, seed=7)
    b = evaluate_trials(model, split, spec, defects, trials=4, seed=7)
    c = evaluate_trials(model, split, spec, defects, trials=4, seed=8)
    assert a.accs == b.accs and a.accs != c.accs
    assert evaluate_trials(model, split, spec, DefectConfig(), trials=2, seed=7).accs == [1.0, 1.0]
    assert all(m.weight_override is None for m in model.modules() if hasattr(m, "weight_override"))


@pytest.mark.parametrize("bits", [1, 4])
def test_grouped_layer_reads_back_exactly(bits):
    model = nn.Sequential(nn.Conv2d(6, 6, 3, groups=3, bias=False))
    convert(model, default="binary" if bits == 1 else f"kbit:{bits}")
    layer = model[0]
    ml = map_layer("0", layer, CrossbarSpec(bits_per_cell=1))
    assert ml.g_pos.shape[2] == 9 * 2  # the rows of one group's matrix
    assert torch.allclose(ml.read_weight(), layer.quantized_weight().detach(), rtol=0, atol=1e-6)
    assert ml.tiles["used_rows"] == 9 * 6 and ml.tiles["max_rows"] == 9 * 6  # block-diagonal: all 6 channels


def test_fused_converted_model_equals_it():
    model = external_model(f"{ZOO}:resnet20_binary_form", in_channels=3, num_classes=10, image_size=8, seed=0)
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    model = model.double().eval()
    fused = fuse_model(model, (3, 8, 8))
    x = torch.rand(8, 3, 8, 8, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), rtol=0, atol=1e-9)
    # traced pairs = the zoo model's declared ones: each block's bn1 feeds only conv2's binarizer -> comparators;
    # the stem BN and the bn2s feed residual adds -> integer-affine maps
    zoo = build_model("resnet20", in_channels=3, num_classes=10, image_size=8, precision="binary", seed=0)
    assert traced_fusion_pairs(model, (3, 8, 8)) == zoo.fusion_pairs()
    kinds = [type(m).__name__ for m in fused.modules()]
    assert kinds.count("ThresholdComparator") == 9 and kinds.count("IntegerAffine") == 10


def test_fusion_skips_a_bn_behind_an_inplace_activation():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, bias=True), nn.ReLU(inplace=True), nn.BatchNorm2d(4), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3))
    net[2].running_mean.uniform_(-0.5, 0.5)
    convert(net, input_shape=(2, 6, 6))
    net = net.double().eval()
    fused = fuse_model(net, (2, 6, 6))
    assert isinstance(fused[2], nn.BatchNorm2d)  # not paired: the ReLU changed the conv's output in place
    x = torch.rand(4, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fused(x), net(x), rtol=0, atol=1e-9)


def test_per_layer_report_lists_digital_layers():
    model = external_model(f"{ZOO}:vgg11_bn", in_channels=3, num_classes=10, image_size=32,
                           rules={"first": "digital", "last": "digital"})
    res = estimate_model(model, (3, 32, 32), CrossbarSpec())
    assert res["digital"] == ["0.0", "2.3"]
    assert {r["name"] for r in res["layers"]}.isdisjoint(res["digital"]) and len(res["layers"]) == 8


def test_linear_on_tokens_is_charged_per_token():
    class Tokens(nn.Module):  # a token MLP: nn.Linear on (N, T, C) runs T matrix-vector products per image
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, 4)
            self.mix = nn.Linear(8, 8)
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)  # (N, 16, 8)
            return self.head(self.mix(t).mean(1))

    model = Tokens()
    convert(model, input_shape=(3, 16, 16))
    rows = {r["name"]: r for r in estimate_model(model, (3, 16, 16), CrossbarSpec())["layers"]}
    one = nn.Sequential(nn.Linear(8, 8))
    convert(one)
    single = estimate_model(one, (8,), CrossbarSpec())["layers"][0]
    assert rows["mix"]["energy_uj"] == pytest.approx(16 * single["energy_uj"], rel=1e-12)
    assert rows["mix"]["biops"] == 16 * 8 * 8 and rows["head"]["biops"] == 8 * 10


def test_non_square_kernel_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, (1, 3)), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))  # materialise the lazy layer
    convert(model)
    with pytest.raises(CimnasError, match="layer '0' has a 1x3 kernel"):
        estimate_model(model, (3, 8, 8), CrossbarSpec())
