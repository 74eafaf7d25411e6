"""UAE search loop: run folder, cache, stop rule, resume after a kill, config checks, CLI."""

import argparse
import json

import pytest
import torch

from cimnas.config import from_dict, validate
from cimnas.errors import CimnasError
from cimnas.pipelines.uae.config import UAESearchConfig
from cimnas.pipelines.uae.search import run_search
from cimnas.utils.io import read_jsonl

_TIMES = ("time_s", "train_s", "eval_s")


class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def num_batches(self, bs):
        return (len(self.y) + bs - 1) // bs

    def batches(self, batch_size, shuffle=False, generator=None, augment=False):
        order = torch.randperm(len(self.y), generator=generator) if shuffle else torch.arange(len(self.y))
        for i in range(0, len(self.y), batch_size):
            j = order[i:i + batch_size]
            yield self.x[j], self.y[j]


class _Splits:
    name, num_classes, in_channels, image_size = "toy", 3, 1, 8

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 3, (72,), generator=g)
        x = torch.rand(72, 1, 8, 8, generator=g) * 0.3
        for c in range(3):  # class c: a bright band at rows 2c..2c+1
            x[y == c, :, 2 * c:2 * c + 2] += 0.7
        self.train, self.test = _Split(x[:48], y[:48]), _Split(x[48:], y[48:])
        self.search_train, self.search_eval = _Split(x[:36], y[:36]), _Split(x[36:48], y[36:48])


def _cfg(**over):
    d = {"label": "toy", "progress": False, "device": "cpu",
         "space": {"n_conv": 2, "fc_hidden": 16, "channels": [4, 6], "kernels": [1, 3], "int_bits": [1, 2],
                   "frac_bits": [2, 3], "pool_after": [1]},
         "train": {"epochs": 1, "batch_size": 12, "lr": 0.01}, "eval": {"k": 2, "statistic": "mean"},
         "controller": {"batch_rollouts": 3, "lr": 0.05},
         "search": {"episodes": 8, "stop_repeats": 0, "energy_weight": 0.0},
         "final": {"epochs": 1, "samples": 3}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    cfg = from_dict(UAESearchConfig, d)
    validate(cfg)
    return cfg


def _strip(recs):
    return [{k: v for k, v in r.items() if k not in _TIMES} for r in recs]


def test_run_folder_and_resume_after_kill_matches_uninterrupted(tmp_path):
    splits = _Splits()
    full = run_search(_cfg(), tmp_path / "full", splits=splits)
    for name in ("run.json", "config.yaml", "episodes.jsonl", "checkpoints/controller.pt", "best_arch.json",
                 "final.json", "checkpoints/final_model.pt", "figures/rewards.png", "figures/clean_vs_noisy.png"):
        assert (tmp_path / "full" / name).is_file(), name
    log = read_jsonl(tmp_path / "full" / "episodes.jsonl")
    assert len(log) == 8 and [r["episode"] for r in log] == list(range(1, 9))  # counted from 1, as in the log
    for r in log:
        assert len(r["noisy_accs"]) == 2 and r["reward"] == pytest.approx(sum(r["noisy_accs"]) / 2)
        assert r["energy_uj"] is None or r["energy_uj"] > 0
    best = max(log, key=lambda r: r["reward"])
    assert full["arch_key"] == best["arch_key"] and full["mc_samples"] == 3
    # the final summary is cimnas.stats.summarize of the Monte-Carlo accuracies: p5 (not p95), std ddof 1
    assert "p95" not in full and full["min"] <= full["p5"] <= full["median"] <= full["max"]

    class Killed(Exception):
        pass

    def kill(i):
        if i == 5:  # after 5 episodes: controller checkpoint at 3, two episodes to replay
            raise Killed

    with pytest.raises(Killed):
        run_search(_cfg(), tmp_path / "cut", splits=splits, on_episode=kill, figures=False)
    assert len(read_jsonl(tmp_path / "cut" / "episodes.jsonl")) == 5
    assert not (tmp_path / "cut" / "final.json").exists()
    resumed = run_search(_cfg(), tmp_path / "cut", resume=True, splits=splits, figures=False)
    assert _strip(read_jsonl(tmp_path / "cut" / "episodes.jsonl")) == _strip(log)
    for k in ("arch_key", "clean_acc", "mean", "p5", "std"):
        assert resumed[k] == full[k]


def test_cache_and_repeat_stop(tmp_path):
    # one-choice space: every episode proposes the same child -> cache hits, stop after 3 repeats
    cfg = _cfg(space={"channels": [4], "kernels": [3], "int_bits": [2], "frac_bits": [3]},
               search={"episodes": 20, "stop_repeats": 3})
    out = run_search(cfg, tmp_path / "r", splits=_Splits(), run_final=False)
    log = read_jsonl(tmp_path / "r" / "episodes.jsonl")
    assert len(log) == 3 and out["stop_reason"] == "repeats" and out["unique_children"] == 1
    assert [r["cache_hit"] for r in log] == [False, True, True]
    assert log[1]["time_s"] == 0.0 and log[1]["reward"] == log[0]["reward"]


def test_quantnas_k0_reward_is_clean_accuracy(tmp_path):
    run_search(_cfg(eval={"k": 0}, search={"episodes": 3}), tmp_path / "q", splits=_Splits(), run_final=False)
    for r in read_jsonl(tmp_path / "q" / "episodes.jsonl"):
        assert r["noisy_accs"] == [] and r["reward"] == r["clean_acc"]


def test_resume_with_other_config_and_existing_folder(tmp_path):
    splits = _Splits()
    run_search(_cfg(search={"episodes": 3}), tmp_path / "a", splits=splits, run_final=False)
    before = (tmp_path / "a" / "episodes.jsonl").read_text()
    with pytest.raises(CimnasError, match=r"saved run at eval.k;"):  # the episode limit alone may change
        run_search(_cfg(eval={"k": 3}, search={"episodes": 4}), tmp_path / "a", resume=True, splits=splits)
    with pytest.raises(CimnasError, match="--resume"):
        run_search(_cfg(search={"episodes": 3}), tmp_path / "a", splits=splits)
    assert (tmp_path / "a" / "episodes.jsonl").read_text() == before
    run_search(_cfg(search={"episodes": 4}), tmp_path / "a", resume=True, splits=splits, run_final=False)
    log = read_jsonl(tmp_path / "a" / "episodes.jsonl")
    assert len(log) == 4 and (tmp_path / "a" / "episodes.jsonl").read_text().startswith(before)
    # a resume may extend the search, never shorten its history
    with pytest.raises(CimnasError, match="4 episodes are already done"):
        run_search(_cfg(search={"episodes": 2}), tmp_path / "a", resume=True, splits=splits, run_final=False)


def test_wrong_file_as_controller_checkpoint_is_one_line_error(tmp_path):
    splits = _Splits()
    run_search(_cfg(search={"episodes": 3}), tmp_path / "a", splits=splits, run_final=False)
    ck = tmp_path / "a" / "checkpoints" / "controller.pt"
    assert ck.is_file()
    torch.save({"format": "cimnas-checkpoint-v2", "episodes": "three", "controller": {}}, ck)
    with pytest.raises(CimnasError, match="episodes"):
        run_search(_cfg(search={"episodes": 4}), tmp_path / "a", resume=True, splits=splits, run_final=False)
    ck.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CimnasError) as e:
        run_search(_cfg(search={"episodes": 4}), tmp_path / "a", resume=True, splits=splits, run_final=False)
    assert "\n" not in str(e.value) and str(ck) in str(e.value)


def test_p95_is_an_alias_of_p5():
    old, new = _cfg(eval={"statistic": "p95"}), _cfg(eval={"statistic": "p5"})
    assert old.eval.statistic == new.eval.statistic == "p5"


@pytest.mark.parametrize("over", [{"eval": {"k": -1}}, {"eval": {"statistic": "q2"}}, {"eval": {"statistic": "avg"}},
                                  {"noise": {"gaussian_sigma": -1.0}}, {"final": {"samples": 1}},
                                  {"final": {"samples": -5}}, {"final": {"samples": 10**12}},
                                  {"eval": {"k": 10**12}}, {"controller": {"lr": float("nan")}},
                                  {"controller": {"lr": "nan"}}, {"noise": {"gaussian_sigma": float("inf")}},
                                  {"space": {"channels": [8, 10**6]}}, {"space": {"channels": []}},
                                  {"noise": {"mode": "bitslice"}}])
def test_bad_config_values(over):
    with pytest.raises(CimnasError):
        _cfg(**over)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from cimnas.cli import OneLineParser
    from cimnas.commands.uae_search import register_search

    parser = OneLineParser(prog="cimnas")
    uae = parser.add_subparsers(dest="command").add_parser("uae").add_subparsers(dest="sub")
    register_search(uae)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("eval: {k: -2}\n")
    args = parser.parse_args(["uae", "search", "--config", str(cfg_path), "--out", str(tmp_path / "o")])
    with pytest.raises(CimnasError, match="eval.k"):
        args.func(args)
    assert not (tmp_path / "o").exists()
    args = parser.parse_args(["uae", "report", "--runs", str(tmp_path / "missing")])
    with pytest.raises(CimnasError):
        args.func(args)
    # Monte-Carlo work above the limit: refused before the search starts, with the estimate and the variable
    cfg_path.write_text("device: cpu\ndata: {name: digits}\nfinal: {samples: 9000000}\n")
    args = parser.parse_args(["uae", "search", "--config", str(cfg_path), "--out", str(tmp_path / "w")])
    with pytest.raises(CimnasError, match="CIMNAS_MAX_MC_WORK=") as e:
        args.func(args)
    assert "weight draws" in str(e.value) and not (tmp_path / "w").exists()
    assert isinstance(args, argparse.Namespace) and json.dumps({})


def test_representable_init_lifts_dead_layers_only():
    from cimnas.pipelines.uae.child import build_child
    from cimnas.search.uae_space import ConvChoice, UAEArch, UAESpaceConfig

    space = UAESpaceConfig(n_conv=3, fc_hidden=32)
    # layer 0: 1-bit-fraction 7x7 conv over 64 channels -> default init std << step 0.5 (dead);
    # layer 2: 6 fraction bits (step 1/64) on a 1x1 conv -> default init already spans several steps
    arch = UAEArch((ConvChoice(64, 7, 1, 1), ConvChoice(64, 7, 0, 2), ConvChoice(24, 1, 1, 6)))
    plain = build_child(arch, space, 1, 10, 8, seed=3, init="default")
    lifted = build_child(arch, space, 1, 10, 8, seed=3, init="representable")
    again = build_child(arch, space, 1, 10, 8, seed=3, init="default")
    for a, b in zip(plain.convs, again.convs, strict=True):
        assert torch.equal(a.weight, b.weight)  # "default" is the unchanged, seeded PyTorch init
    for p, r in zip(plain.convs, lifted.convs, strict=True):
        step = r.weight_quantizer.step
        if float(p.weight.detach().std()) < step:
            assert float(r.weight.detach().std()) == pytest.approx(step, rel=1e-4)
            assert torch.allclose(r.weight / p.weight, torch.full_like(p.weight, step / float(p.weight.detach().std())))
            assert r.quantized_weight().abs().sum() > 0  # no longer all rounded to zero
        else:
            assert torch.equal(r.weight, p.weight)


def test_final_in_place_and_from_another_run(tmp_path, monkeypatch):
    import yaml

    from cimnas.pipelines.uae import final as final_mod
    from cimnas.pipelines.uae import search as search_mod

    splits = _Splits()
    monkeypatch.setattr(search_mod, "load_splits", lambda cfg, device: splits)
    run_search(_cfg(search={"episodes": 3}), tmp_path / "a", splits=splits, run_final=False)
    res = final_mod.final_command(tmp_path / "a")
    assert res["mc_samples"] == 3 and (tmp_path / "a" / "checkpoints" / "final_model.pt").is_file()
    # the chosen child retrained plain into a new folder; the source run is left as it was
    before = (tmp_path / "a" / "final.json").read_bytes()
    other = final_mod.final_command(tmp_path / "b", source=tmp_path / "a",
                                    overrides=["train.noise_aware=false", "label=plain"])
    assert other["arch_key"] == res["arch_key"] and other["noise_aware"] is False and other["label"] == "plain"
    assert (tmp_path / "a" / "final.json").read_bytes() == before
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["train"]["noise_aware"] is False
    with pytest.raises(CimnasError, match="--resume"):  # never into a folder that already holds a run
        final_mod.final_command(tmp_path / "b", source=tmp_path / "a")
