"""`cimnas uae analyze`: train (or load) a model, analyse its output change at one input, write the run folder.

The maths lives in `cimnas.pipelines.uae.analysis`; this module wires it to data, models, `cimnas.train.fit` and
a `cimnas.runs.RunFolder` of kind "uae-analysis": config.yaml, run.log, checkpoints/model.pt (when trained here),
analysis.json, figures/output_change_elem<E>.png. A second run into the same folder is refused; `--resume`
reuses the trained model and an existing analysis.json (nothing is recomputed or replaced).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimnas.config import OptimConfig
from cimnas.data import load_from_config
from cimnas.errors import check
from cimnas.hardware.montecarlo import check_mc_work, model_weights
from cimnas.nn.layers import quant_layers
from cimnas.nn.models import build_model, model_payload
from cimnas.nn.quantizers import Identity
from cimnas.nn.zoo import external_model, is_external, load_any
from cimnas.pipelines.uae.analysis import gaussian_fit_stats, output_change
from cimnas.pipelines.uae.config import AnalysisConfig, AnalysisSettings, NoiseConfig
from cimnas.reports.uae_analysis_plot import plot_output_change
from cimnas.runs import RunFolder, load_state
from cimnas.train import evaluate, fit
from cimnas.utils.seed import derive_seed, resolve_device

KIND = "uae-analysis"
MODEL_ALIASES = {"lenet": "lenet5", "mlp-relu": "mlp", "mlp-sigmoid": "mlp"}


def canonical_model(name: str) -> str:
    return MODEL_ALIASES.get(name, name)


def _default_rule(precision: str) -> str:
    """The conversion rule of an outside model's layers for the analysis precision (kbit = 8-bit DoReFa)."""
    return "kbit:8" if precision == "kbit" else precision


def build_analysis_model(name: str, splits: Any, model_kwargs: dict | None = None, float_quantizers: bool = False,
                         seed: int = 0, rules: dict | None = None) -> nn.Module:
    """Build `name` for `splits` via cimnas.nn.models.build_model, initialised from `seed` (global RNG untouched);
    `float_quantizers` replaces every quantizer by identity (the Float-Conv twin of the fixed-point CNN). An
    outside model (cimnas.nn.zoo) is built by its factory and converted (`rules`, else `precision` per layer)."""
    if is_external(name):
        return external_model(name, in_channels=splits.in_channels, num_classes=splits.num_classes,
                              image_size=splits.image_size, rules=rules,
                              default=_default_rule((model_kwargs or {}).get("precision", "float")), seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(canonical_model(name), in_channels=splits.in_channels, num_classes=splits.num_classes,
                            image_size=splits.image_size, **(model_kwargs or {}))
    if float_quantizers:
        for _, layer in quant_layers(model):
            layer.input_quantizer, layer.weight_quantizer = Identity(), Identity()
    return model


def train_model(model: nn.Module, splits: Any, train: OptimConfig, seed: int, device: torch.device) -> dict:
    """Train on `splits.train` through `cimnas.train.fit`; returns the last epoch's record and the test accuracy."""
    records = fit(model, splits.train, train, device=device, seed=derive_seed(seed, "analysis-train"),
                  desc="train")
    log = dict(records[-1]) if records else {}
    log["test_acc"] = evaluate(model, splits.test, batch_size=train.eval_batch_size, device=device)
    return log


def pick_input(splits: Any, index: int) -> tuple[torch.Tensor, int]:
    """The fixed input I = test image `index` as a batch of one, and its label."""
    n = len(splits.test)
    check(0 <= index < n, f"input index {index} is outside the test set (0..{n - 1}); pick a smaller --input-index")
    x, y = splits.test.subset(torch.tensor([index])).tensors()
    return x, int(y[0])


def analyze(model: nn.Module, x: torch.Tensor, noise: NoiseConfig, s: AnalysisSettings, seed: int | None = None,
            progress: bool = False) -> dict:
    """Output change of `model` at input `x` (Eq. 3-4) and its Gaussian fit (Eq. 5-6), as plain data;
    `values` (S, n_out) is returned too for plotting."""
    check_mc_work(s.samples, model_weights(model), "analysis samples")
    t0 = time.perf_counter()
    values = output_change(model, x, noise.gaussian_sigma, s.samples, noise.gaussian_mode,
                           s.seed if seed is None else seed,
                           cell_bits=noise.cell_bits, weight_bits=noise.weight_bits, progress=progress)
    t_mc = time.perf_counter() - t0
    fit_ = gaussian_fit_stats(values, s.bins, s.span)
    return {**fit_.to_dict(), "gaussian_sigma": noise.gaussian_sigma, "gaussian_mode": noise.gaussian_mode,
            "seconds_monte_carlo": t_mc,
            "values": values}


def load_splits(data: Any, seed: int) -> Any:
    return load_from_config(data, seed)


def run_analysis(cfg: AnalysisConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """One `uae analyze` run in run folder `out`; returns analysis.json's content (plus "figure")."""
    device = resolve_device(cfg.device)
    splits = load_splits(cfg.data, cfg.seed)  # bad data / input index: refused before the folder is touched
    x, label = pick_input(splits, cfg.analysis.input_index)
    # the model (a checkpoint, or a fresh build: an outside factory runs here) before the folder is touched
    info: dict = {"dataset": splits.name, "model": canonical_model(cfg.model)}
    if cfg.checkpoint:  # a cimnas checkpoint, or a plain state_dict of the outside model cfg.model names
        source = cfg.model if is_external(cfg.model) else None
        model, ckpt = load_any(cfg.checkpoint, source, in_channels=splits.in_channels,
                               num_classes=splits.num_classes, image_size=splits.image_size, rules=cfg.rules,
                               default=_default_rule(cfg.precision))
        info["checkpoint"] = str(cfg.checkpoint)
        info["test_acc"] = (ckpt.get("metrics") or {}).get("test_acc")
    else:
        model = build_analysis_model(cfg.model, splits, {"precision": cfg.precision}, seed=cfg.seed,
                                     rules=cfg.rules)
        check_mc_work(cfg.analysis.samples, model_weights(model), "analysis samples (--samples)")
    with RunFolder.open(out, KIND, cfg, resume=resume, resumable=("device", "train.progress"),
                        config_cls=AnalysisConfig) as run:
        if not cfg.checkpoint:
            if (run.ckpt / "model.pt").exists():  # --resume: the model trained by the first attempt
                ck = run.load("model.pt", fields={"state_dict": dict, "metrics": dict})
                load_state(model, ck["state_dict"], run.ckpt / "model.pt")
                info["test_acc"] = ck["metrics"].get("test_acc")
            else:
                log = train_model(model, splits, cfg.train, cfg.seed, device)
                info["test_acc"] = log["test_acc"]
                run.save("model.pt", model_payload(model, dataset=splits.info(), config=run.stored_config(),
                                                   epoch=cfg.train.epochs, metrics={"test_acc": log["test_acc"]}))
            info["epochs"] = cfg.train.epochs
        model = model.to(device)
        with torch.no_grad():
            n_out = model.eval()(x.to(device)).shape[1]
        check(cfg.element < n_out, f"--element must be < {n_out} (number of outputs), got {cfg.element}")
        e = cfg.element
        fig_path = run.figures / f"output_change_elem{e}.png"
        if run.has("analysis.json") and fig_path.is_file():  # --resume of a finished run: nothing to redo
            return {**run.read_result("analysis.json"), "figure": str(fig_path)}
        res = analyze(model, x.to(device), cfg.noise, cfg.analysis, progress=progress)
        values = res.pop("values")
        res.update(info, input_index=cfg.analysis.input_index, input_label=label)
        run.write_result("analysis.json", res)
        run.figures.mkdir(exist_ok=True)
        plot_output_change(values[:, e].cpu(), res["mean"][e], res["std"][e], fig_path, bins=cfg.analysis.bins,
                           span=cfg.analysis.span, chi2=res["chi2"][e],
                           title=f"{info['model']} output {e}, "
                                 f"sigma={cfg.noise.gaussian_sigma} ({cfg.noise.gaussian_mode})")
        run.log(f"chi2_mean {res['chi2_mean']:.4g}, mse_mean {res['mse_mean']:.4g} ({cfg.analysis.samples} samples "
                f"in {res['seconds_monte_carlo']:.1f} s)", echo=False)
        return {**res, "figure": str(fig_path)}
