"""Study helpers: equal-reward lambda, uniform-curve interpolation, the DDPG / random / U-kx comparison."""

import json
import math

import pytest

from cimnas.errors import CimnasError
from cimnas.pipelines.studies.hawis_study import (
    calibrate_lambda_val,
    compare,
    equal_reward_lambda,
    interp_uniform,
    main,
)


def test_equal_reward_lambda_recovers_known_value():
    lam_true = 0.05
    qs = [0.3, 1.0, 2.0, 4.0]
    # err_k * (log q_k - log lam) = 0.1 for every k: all rewards equal, zero slope at lam_true
    rows = [(k, 1 - 0.1 / (math.log(q) - math.log(lam_true)), q) for k, q in zip((0.5, 1, 1.5, 2), qs, strict=True)]
    lam, found = equal_reward_lambda(rows)
    assert found
    assert lam == pytest.approx(lam_true, rel=1e-6)
    for _, a, q in rows:  # and the rewards at that lambda are indeed equal
        assert -(1 - a) * math.log(q / lam) == pytest.approx(-0.1, rel=1e-5)


def test_equal_reward_lambda_flat_curve_falls_back():
    rows = [(0.5, 0.8, 0.3), (1, 0.8, 1.0), (2, 0.8, 4.0)]  # no accuracy gain: no lambda makes the slope zero
    lam, found = equal_reward_lambda(rows)
    assert not found and lam == pytest.approx(0.15)
    with pytest.raises(CimnasError):
        equal_reward_lambda(rows[:1])


def test_interp_uniform_log_energy():
    curve = [(40.0, 0.80), (10.0, 0.70)]
    assert interp_uniform(curve, 20.0) == pytest.approx(0.75)  # halfway in log-energy
    assert interp_uniform(curve, 10.0) == pytest.approx(0.70)
    assert interp_uniform(curve, 5.0) is None and interp_uniform(curve, 50.0) is None


def _study(tmp_path, with_uniform_folders):
    def w(p, obj):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj) if not isinstance(obj, list) else "\n".join(json.dumps(o) for o in obj) + "\n")

    uni = {"U-1x": {"widths": [4], "energy_uj": 10.0, "test_accuracy": 0.70},
           "U-2x": {"widths": [8], "energy_uj": 40.0, "test_accuracy": 0.80,
                    "robustness": {"mean": 0.75, "p5": 0.70}}}
    for a, acc in (("ddpg", 0.78), ("random", 0.72)):
        eps = [{"episode": i, "widths": [4 + i], "reward": -0.5 + 0.01 * i, "accuracy": 0.6 + 0.01 * i,
                "energy_uj": 10.0 + i} for i in range(5)]
        sc = {"searched": {"widths": [7], "energy_uj": 20.0, "test_accuracy": acc,
                           "robustness": {"mean": acc - 0.05, "p5": acc - 0.1}},
              "pareto-ep1": {"widths": [5], "energy_uj": 11.0, "test_accuracy": acc - 0.05}}
        if a == "ddpg" and not with_uniform_folders:
            sc.update(uni)
        w(tmp_path / a / "episodes.jsonl", eps)
        w(tmp_path / a / "stage_c.json", sc)
    if with_uniform_folders:
        for k, v in uni.items():
            w(tmp_path / "uniform" / k / "stage_c.json", {"searched": v})


@pytest.mark.parametrize("with_uniform_folders", [False, True])
def test_compare_table_and_figure(tmp_path, with_uniform_folders):
    _study(tmp_path, with_uniform_folders)
    text = compare(tmp_path, "t")
    assert (tmp_path / "compare_fig1.png").stat().st_size > 1000
    assert (tmp_path / "compare.md").read_text() == text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    # 20 uJ is halfway between U-1x (70 %) and U-2x (80 %) in log-energy: 75 %; DDPG 78 % -> +3 points
    assert "| 75.00 | +3.00 |" in rows["| ddpg best reward (ep. 3)"]
    assert "| 75.00 | -3.00 |" in rows["| random best reward (ep. 3)"]
    assert "75.00 / 70.00" in rows["| U-2x"]
    assert "random: 5 episodes, best reward -0.4600" in text


def test_compare_missing_and_cli_error(tmp_path, capsys):
    with pytest.raises(CimnasError, match="no stage_c.json"):
        compare(tmp_path)
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_spread_and_uniform_widths(tmp_path, monkeypatch):
    import yaml

    import cimnas.pipelines.studies.hawis_study as study
    from cimnas.pipelines.studies.hawis_study import seed_spread, uniform_widths

    cfg = {"seed": 1, "device": "cpu", "data": {"name": "digits", "limit": 160, "test_limit": 60},
           "model": {"name": "mlp", "thermometer_levels": 4, "options": {"hidden_sizes": [16, 16], "bn": True}},
           "space": {"r_min": 0.5, "r_max": 2.0, "d": 4},
           "retrain": {"epochs": 1, "batch_size": 32, "lr": 0.05, "milestones": [], "max_batches": 2}}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert uniform_widths(str(p), 0.5) == [8, 8] and uniform_widths(str(p), 1.5) == [24, 24]
    out = tmp_path / "spread.json"
    res = seed_spread(str(p), 1.0, 2, out)
    assert sorted(res["accuracies"]) == ["U-1x-rep0", "U-1x-rep1"] and res["widths"] == [16, 16]
    accs = list(res["accuracies"].values())
    assert res["mean"] == pytest.approx(sum(accs) / 2) and res["min"] <= res["max"]
    assert sorted(res["val_accuracies"]) == ["U-1x-rep0", "U-1x-rep1"]
    calls = []
    monkeypatch.setattr(study, "train_model", lambda *a, **k: calls.append(a) or {"test_accuracy": 0.5,
                                                                                  "val_accuracy": 0.4})
    again = seed_spread(str(p), 1.0, 3, out)  # resumes: trains only rep2
    assert len(calls) == 1 and again["accuracies"]["U-1x-rep0"] == accs[0] and len(again["accuracies"]) == 3
    with pytest.raises(CimnasError, match="n >= 2"):
        seed_spread(str(p), 1.0, 1, tmp_path / "x.json")
    with pytest.raises(CimnasError, match="k must be > 0"):
        seed_spread(str(p), 0.0, 2, tmp_path / "x.json")
    with pytest.raises(CimnasError, match="k must be > 0"):
        uniform_widths(str(p), -1.0)
    assert main(["uniform-widths", str(tmp_path / "missing.yaml"), "1"]) == 2  # one-line error, no traceback


def test_lambda_from_stage_c_uses_validation_accuracies_only(tmp_path, capsys):
    lam_true = 0.05
    qs = {"U-1x": 1.0, "U-2x": 4.0, "U-0.5x": 0.3}
    for k, q in qs.items():  # val accuracies with equal rewards at lam_true; test accuracies say otherwise
        val = 1 - 0.1 / (math.log(q) - math.log(lam_true))
        sc = {"searched": {"energy_uj": 10.0 * q, "val_accuracy": val, "test_accuracy": 1.0 - q / 10}}
        (tmp_path / "uniform" / k).mkdir(parents=True)
        (tmp_path / "uniform" / k / "stage_c.json").write_text(json.dumps(sc))
    lam, rows = calibrate_lambda_val(tmp_path)
    assert lam == pytest.approx(lam_true, rel=1e-6)
    assert [r[0] for r in rows] == [0.5, 1.0, 2.0] and rows[2][2] == pytest.approx(4.0)
    assert main(["lambda-val", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{lam_true:.4f}"
    (tmp_path / "uniform" / "U-1x" / "stage_c.json").unlink()
    with pytest.raises(CimnasError, match="U-1x"):
        calibrate_lambda_val(tmp_path)
