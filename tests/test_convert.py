"""cimnas.convert on outside architectures (tests/zoo_models.py, loaded as `--model-file` loads them): every
conv / FC converted and counted, weights carried over, rules by name, unmappable layers refused by name,
the recipe through the checkpoint payload with identical predictions, never a silent 0 uJ."""

from pathlib import Path

import pytest
import torch
from torch import nn

import cimnas
from cimnas.errors import CimnasError
from cimnas.hardware.crossbar import CrossbarSpec
from cimnas.hardware.energy import estimate, estimate_model
from cimnas.hardware.mapping import map_model
from cimnas.nn.convert import check_mappable, convert, resolve_rules
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.nn.models import load_model, model_payload
from cimnas.nn.zoo import external_model, load_any, parse_source
from cimnas.utils.io import save_checkpoint

ZOO = Path(__file__).parent / "zoo_models.py"
ARCHS = {"resnet18": (3, 16, 16), "mobilenet_v2": (3, 16, 16), "vgg11_bn": (3, 32, 32), "mlp": (1, 8, 8),
         "concat_cnn": (3, 8, 8)}


def build(name: str, shape=None, **kw) -> nn.Module:
    c, h, _ = shape or ARCHS[name]
    return external_model(f"{ZOO}:{name}", in_channels=c, num_classes=10, image_size=h, seed=0, **kw)


def plain(name: str) -> nn.Module:
    from cimnas.nn.zoo import build_source

    c, h, _ = ARCHS[name]
    return build_source(parse_source(f"{ZOO}:{name}"), in_channels=c, num_classes=10, image_size=h)


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_convertible_layer_is_mapped_and_counted(name):
    shape = ARCHS[name]
    names = [n for n, m in plain(name).named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    model = build(name)
    assert [n for n, m in model.named_modules() if isinstance(m, QConv2d | QLinear)] == names
    assert model.cimnas_conversion.converted == names and model.cimnas_conversion.digital == []
    spec = CrossbarSpec()
    res = estimate_model(model, shape, spec)
    assert sorted(r["name"] for r in res["layers"]) == sorted(names)  # every layer charged, none twice
    assert all(r["energy_uj"] > 0 and r["crossbars"] >= 1 for r in res["layers"])
    assert res["energy_uj"] == pytest.approx(sum(r["energy_uj"] for r in res["layers"]))
    assert [ml.name for ml in map_model(model, spec).layers] == names
    # the BiOps count the real weights: sum over layers of (k^2 C_in / groups) C_out x output positions
    for r in res["layers"]:  # whole multiples of the weights: weights x output positions
        assert r["biops"] % model.get_submodule(r["name"]).weight.numel() == 0


def test_depthwise_layers_are_grouped_block_diagonal():
    model = build("mobilenet_v2")
    res = estimate_model(model, ARCHS["mobilenet_v2"], CrossbarSpec())
    dw = [r for r in res["layers"] if getattr(model.get_submodule(r["name"]), "groups", 1) > 1]
    assert dw, "MobileNetV2 has depthwise convolutions"
    for r in dw:
        m = model.get_submodule(r["name"])
        assert m.groups == m.in_channels == m.out_channels
        c = m.in_channels  # rows 9 C (the whole input), C columns, 9 C cells hold weights: 2 per 256 x 256 array
        assert r["used_rows"] == 9 * c and r["row_tiles"] == -(-c // 28)
        assert r["utilization"] == pytest.approx(9 * c / (r["crossbars"] * 256 * 256))


@pytest.mark.parametrize("name", list(ARCHS))
def test_float_conversion_keeps_outputs_and_parameters(name):
    ref = plain(name)
    randomize_bn(ref)
    x = torch.rand(2, *ARCHS[name], generator=torch.Generator().manual_seed(1))
    params = {n: p for n, p in ref.named_parameters()}
    with torch.no_grad():
        y0 = ref.eval()(x)
    convert(ref, default="float", input_shape=ARCHS[name])
    with torch.no_grad():
        assert torch.equal(ref(x), y0)
    # the very same Parameter objects: an optimiser built before the conversion still trains the model
    assert all(p is params[n] for n, p in ref.named_parameters())


def test_geometry_arguments_carried_over():
    net = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=True,
                                  padding_mode="reflect"),
                        nn.Conv2d(6, 6, (3, 3), padding="same", padding_mode="circular"), nn.Flatten(),
                        nn.Linear(6 * 4 * 4, 3, bias=False))
    x = torch.rand(2, 4, 8, 8)
    with torch.no_grad():
        y0 = net(x)
    convert(net, default="float", input_shape=(4, 8, 8))
    q = net[0]
    assert isinstance(q, QConv2d) and (q.stride, q.dilation, q.groups, q.padding_mode) == ((2, 2), (2, 2), 2, "reflect")
    with torch.no_grad():
        assert torch.equal(net(x), y0)


def test_precisions_quantize_as_named():
    model = build("mlp", rules={"1": "binary", "3": "kbit:2", "last": "digital"})
    b, k = model.get_submodule("1"), model.get_submodule("3")
    assert b.quantized_weight().unique().numel() == 2  # sign(W) E|W|: exactly two values
    assert k.quantized_weight().unique().numel() <= 4 and k.weight_quantizer.bits == 2
    assert type(model.get_submodule("5")) is nn.Linear  # digital: left as it was
    assert model.cimnas_conversion.layers == {"1": "binary", "3": "kbit:2", "5": "digital"}


def test_rules_first_match_words_and_regex():
    class DefinedBackwards(nn.Module):  # definition order != execution order: the words follow the execution
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 2)
            self.body = nn.Conv2d(3, 8, 3)
            self.stem = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.head(self.body(self.stem(x)).mean((2, 3)))

    conv = resolve_rules(DefinedBackwards(), {"first": "digital", "re:h.ad": "kbit:4", "*": "float"},
                         input_shape=(3, 8, 8))
    assert conv.layers == {"head": "kbit:4", "body": "float", "stem": "digital"}
    conv = resolve_rules(DefinedBackwards(), {"last": "digital"}, default="kbit", input_shape=(3, 8, 8))
    assert conv.layers == {"head": "digital", "body": "kbit:8", "stem": "kbit:8"}


@pytest.mark.parametrize("rules, message", [
    ({"nothing.*": "binary"}, "matches no layer"),
    ({"*": "ternary"}, "unknown precision"),
    ({"*": "kbit:99"}, "bits must be in 1..16"),
    ({"re:(": "binary"}, "not a valid regular expression"),
    ({"*": "digital"}, "nothing would sit on a crossbar"),
])
def test_bad_rules_are_one_line_errors(rules, message):
    with pytest.raises(CimnasError, match=message):
        convert(plain("mlp"), rules)


def test_unmappable_layers_named_unless_kept_digital():
    with pytest.raises(CimnasError, match="module 'attn' computes a matmul"):
        external_model(f"{ZOO}:tiny_vit", in_channels=3, num_classes=10, image_size=16)
    model = external_model(f"{ZOO}:tiny_vit", in_channels=3, num_classes=10, image_size=16,
                           rules={"attn": "digital"})
    assert model.cimnas_conversion.digital == ["attn", "attn.q", "attn.k", "attn.v"]
    res = estimate_model(model, (3, 16, 16), CrossbarSpec())
    assert [r["name"] for r in res["layers"]] == ["patch", "head"] and "attn" in res["digital"]
    with pytest.raises(CimnasError, match="layer '1' is a ConvTranspose2d"):
        external_model(f"{ZOO}:with_conv_transpose", in_channels=3, num_classes=10, image_size=32)

    class MyConv(nn.Conv2d):  # a subclass with its own forward must not lose it silently
        def forward(self, x):
            return super().forward(x) * 2

    for layer, what in ((MyConv(3, 4, 3), "MyConv"), (nn.Conv3d(3, 4, 1), "Conv3d"), (nn.Conv1d(3, 4, 1), "Conv1d")):
        with pytest.raises(CimnasError, match=f"layer '0' is a {what}"):
            convert(nn.Sequential(layer, nn.Flatten(), nn.LazyLinear(2)))

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.w = nn.Parameter(torch.ones(2, 4))

        def forward(self, x):
            return torch.nn.functional.linear(self.fc(x), self.w)

    with pytest.raises(CimnasError, match="model's own forward computes a linear"):
        convert(Functional(), input_shape=(4,))
    with pytest.raises(CimnasError, match="no nn.Conv2d / nn.Linear"):
        convert(nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()))


def test_plain_model_never_reads_zero_energy():
    spec = CrossbarSpec()
    with pytest.raises(CimnasError, match="plain Conv2d that is not on a crossbar"):
        estimate_model(plain("vgg11_bn"), (3, 32, 32), spec)
    with pytest.raises(CimnasError, match="plain Conv2d"):
        map_model(plain("vgg11_bn"), spec)
    with pytest.raises(CimnasError, match="no layer on a crossbar"):
        estimate([], spec)
    with pytest.raises(CimnasError, match="no layer on a crossbar"):
        check_mappable(nn.Sequential(nn.ReLU()), (3,))


def test_input_shape_the_model_rejects():
    with pytest.raises(CimnasError, match="rejects an input of shape 3x8x8"):
        external_model(f"{ZOO}:vgg11_bn", in_channels=3, num_classes=10, image_size=8)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "concat_cnn"])
def test_save_load_gives_identical_predictions(name, tmp_path):
    model = build(name, rules={"first": "digital", "last": "kbit:4"})
    randomize_bn(model, 3)
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.01)
    x = torch.rand(4, *ARCHS[name], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y0 = model.eval()(x)
    save_checkpoint(tmp_path / "m.pt", model_payload(model, dataset={"name": "digits"}))
    with pytest.raises(CimnasError, match="does not run code a checkpoint names"):
        load_model(tmp_path / "m.pt")
    loaded, ckpt = load_model(tmp_path / "m.pt", model_file=f"{ZOO}:{name}")
    assert loaded.cimnas_conversion.layers == model.cimnas_conversion.layers
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), y0)
    # a plain state_dict plus its factory counts as a checkpoint
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    c, h, _ = ARCHS[name]
    again, _ = load_any(tmp_path / "sd.pt", f"{ZOO}:{name}", in_channels=c, num_classes=10, image_size=h,
                        rules={"first": "digital", "last": "kbit:4"})
    with torch.no_grad():
        assert torch.equal(again.eval()(x), y0)


def test_weights_file_that_does_not_fit(tmp_path):
    torch.save(plain("mlp").state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(CimnasError, match="does not fit the model"):
        build("concat_cnn", weights=tmp_path / "mlp.pt")


def test_cimnas_convert_is_exported():
    assert cimnas.convert is convert


def test_rule_forms_and_recipe_mismatch(tmp_path):
    from cimnas.nn.convert import Rule

    assert str(Rule.parse({"precision": "kbit", "bits": 4})) == "kbit:4" == str(Rule.parse("kbit:4"))
    assert str(Rule.parse("kbit")) == "kbit:8" and Rule.parse("digital").on_crossbar is False
    with pytest.raises(CimnasError, match="only kbit takes a bit count"):
        Rule.parse("binary:2")
    model = build("mlp")
    save_checkpoint(tmp_path / "m.pt", model_payload(model))
    other = tmp_path / "other.py"  # the same factory name in another file, with other layer names
    other.write_text("from torch import nn\n\ndef mlp(num_classes=10):\n"
                     "    return nn.Sequential(nn.Flatten(), nn.Identity(), nn.Linear(64, num_classes))\n")
    with pytest.raises(CimnasError, match="no conv / FC layer named '1'"):
        load_model(tmp_path / "m.pt", model_file=f"{other}:mlp")
    with pytest.raises(CimnasError, match="built by factory 'mlp'"):
        load_model(tmp_path / "m.pt", model_file=f"{ZOO}:resnet18")
