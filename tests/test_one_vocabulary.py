"""One name per defect setting across the CLI, HAWIS / UAE configs and the JSON; a model's arch says the bits it
was built with (issue 24 point 5)."""

from __future__ import annotations

import dataclasses

import pytest

from cimnas.cli import build_parser
from cimnas.config import from_dict
from cimnas.errors import CimnasError
from cimnas.hardware.defects import DefectConfig
from cimnas.nn.models import build_model
from cimnas.pipelines.hawis.config import DefectsConfig, HawisConfig
from cimnas.pipelines.uae.config import NoiseConfig, UAESearchConfig

NAMES = {"sa0_rate", "sa1_rate", "variation_sigma", "gaussian_sigma", "gaussian_mode"}


def test_defect_config_json_uses_the_names():
    assert {f.name for f in dataclasses.fields(DefectConfig)} == NAMES
    assert {"sa0_rate", "sa1_rate", "variation_sigma"} <= {f.name for f in dataclasses.fields(DefectsConfig)}
    assert {"gaussian_sigma", "gaussian_mode"} <= {f.name for f in dataclasses.fields(NoiseConfig)}


@pytest.mark.parametrize("new, old", [("--sa0-rate", "--sa0"), ("--sa1-rate", "--sa1"),
                                      ("--variation-sigma", "--sigma"), ("--gaussian-sigma", "--gaussian")])
def test_robustness_flags_and_their_aliases(new, old):
    parser = build_parser()
    a = parser.parse_args(["robustness", "--checkpoint", "x.pt", new, "0.1"])
    b = parser.parse_args(["robustness", "--checkpoint", "x.pt", old, "0.1"])
    dest = new.lstrip("-").replace("-", "_")
    assert getattr(a, dest) == getattr(b, dest) == 0.1 and dest in NAMES


def test_uae_analyze_uses_gaussian_names():
    args = build_parser().parse_args(["uae", "analyze", "--gaussian-sigma", "0.1", "--gaussian-mode", "relative"])
    assert (args.gaussian_sigma, args.gaussian_mode) == (0.1, "relative")


@pytest.mark.parametrize("root, data, hint", [
    (HawisConfig, {"defects": {"sigma": 0.1}}, "defects.variation_sigma"),
    (UAESearchConfig, {"noise": {"sigma": 0.1}}, "noise.gaussian_sigma"),
    (UAESearchConfig, {"noise": {"mode": "relative"}}, "noise.gaussian_mode"),
])
def test_old_config_keys_refused_with_new_name(root, data, hint):
    with pytest.raises(CimnasError, match=hint):
        from_dict(root, data)


@pytest.mark.parametrize("precision, bits", [("binary", 1), ("kbit", 4), ("float", None)])
def test_arch_meta_says_the_bits_as_built(precision, bits):
    model = build_model("mlp", in_channels=1, num_classes=3, image_size=4, precision=precision, bits=4,
                        hidden_sizes=[4])
    assert model.arch_meta["bits"] == bits


def test_run_folder_written_with_old_names_reads_under_new(tmp_path):
    """A run folder from before the rename resumes: its stored config.yaml is read with the keys moved."""
    import yaml

    from cimnas.pipelines.train import TrainRunConfig
    from cimnas.runs import RunFolder

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"defects": {"sigma": 0.1, "trials": 3},
                                                          "hardware": {"preset": "mnsim-128"}}))
    stored = RunFolder(tmp_path, "hawis").stored_config(HawisConfig)
    assert stored["defects"]["variation_sigma"] == 0.1 and stored["defects"]["trials"] == 3
    assert stored["hardware"]["preset"] == "mnsim-128"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"noise": {"sigma": 0.02, "mode": "relative"}}))
    stored = RunFolder(tmp_path, "train").stored_config(TrainRunConfig)
    assert (stored["noise"]["gaussian_sigma"], stored["noise"]["gaussian_mode"]) == (0.02, "relative")
