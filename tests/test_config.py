"""Typed configs: YAML + overrides, type checks, unknown keys, validation hooks, diffs."""

from dataclasses import dataclass, field

import pytest

from cimnas.config import diff_configs, load_config, to_dict
from cimnas.errors import CimnasError


@dataclass
class Inner:
    lr: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [2, 4])
    name: str = "sgd"

    def validate(self):
        if self.lr <= 0:
            raise CimnasError(f"train.lr must be > 0, got {self.lr}")


@dataclass
class Root:
    seed: int = 0
    flag: bool = False
    widths: list[int] | None = None
    train: Inner = field(default_factory=Inner)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\ntrain:\n  lr: 0.5\n")
    cfg = load_config(Root, p, ["train.milestones=[1,2,3]", "flag=true", "widths=16,32"])
    assert cfg.seed == 3 and cfg.train.lr == 0.5 and cfg.train.milestones == [1, 2, 3]
    assert cfg.flag is True and cfg.widths == [16, 32]
    assert to_dict(cfg)["train"]["name"] == "sgd"


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.momentum=0.9", "unknown config key 'train.momentum'"),
        ("seed=abc", "expected an integer"),
        ("flag=maybe", "true/false"),
        ("train.lr=-1", "must be > 0"),
        ("widths=[1, x]", "expected an integer"),
        ("nosuchkey", "section.key=value"),
    ],
)
def test_bad_values(override, match):
    with pytest.raises(CimnasError, match=match):
        load_config(Root, None, [override])


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(CimnasError, match="not found"):
        load_config(Root, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(CimnasError, match="not valid YAML"):
        load_config(Root, bad)


def test_diff_configs():
    a = to_dict(Root())
    b = to_dict(load_config(Root, None, ["train.lr=0.2", "seed=1"]))
    assert diff_configs(a, b) == ["seed", "train.lr"]
