"""Retrain the chosen child and evaluate it under Monte-Carlo noise (UAE Table 3).

The best child of a search (best_arch.json) is retrained `final.retrains` times (training seeds derived from the
run's seed, the child and the retrain index) for `final.epochs` on the full training set (plain or noise-aware as
during the search) through `cimnas.train.fit`, and each retrain is evaluated on the test set under `final.samples`
noise samples by `cimnas.hardware.montecarlo.evaluate_trials` (one trial = one draw held for the whole split),
summarised by `cimnas.stats.summarize`. final.json holds each retrain (clean_acc, mean, std (ddof 1) over noise
samples, min, p5 = the 95%-minimum, median, max) under "retrains", their means at the top level and their spread
over retrains in "retrain_std". The first retrain's model goes to checkpoints/final_model.pt (the one checkpoint
payload).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cimnas.config import apply_overrides, from_dict, to_dict, validate
from cimnas.errors import check
from cimnas.hardware.mc_parallel import parallel_trials
from cimnas.hardware.montecarlo import check_mc_work, model_weights
from cimnas.nn.models import model_payload
from cimnas.parallel import Parallelism
from cimnas.pipelines.uae import search as uae_search
from cimnas.pipelines.uae.child import build_child, train_child, uae_noise
from cimnas.pipelines.uae.config import UAESearchConfig
from cimnas.pipelines.uae.noise import device_noise, evaluate_under_noise
from cimnas.runs import RunFolder
from cimnas.search.uae_space import UAEArch
from cimnas.stats import summarize
from cimnas.utils.seed import derive_seed, resolve_device
from cimnas.utils.units import pct


def _dataset_info(splits: Any) -> dict:
    if hasattr(splits, "info"):
        return splits.info()
    return {"name": splits.name, "in_channels": splits.in_channels, "image_size": splits.image_size,
            "num_classes": splits.num_classes}


#: the Monte-Carlo statistics final.json holds (per retrain, and their mean over retrains at the top level)
MC_FIELDS = ("mean", "std", "min", "p5", "median", "max")


def _retrain_seed(cfg: UAESearchConfig, arch: UAEArch, r: int) -> int:
    """Training seed of retrain r of the chosen child (retrain 0 keeps the seed of single-retrain runs)."""
    return derive_seed(cfg.seed, "final", arch.key()) if r == 0 else derive_seed(cfg.seed, "final", arch.key(), r)


def _retrain_once(cfg: UAESearchConfig, arch: UAEArch, seed: int, splits: Any, device: torch.device,
                  parallel: Parallelism | None, run: RunFolder) -> tuple[torch.nn.Module, dict, tuple[float, float]]:
    """One retrain of the child with training seed `seed` and its Monte-Carlo evaluation on the test set; returns
    the model, its results and (train, evaluation) seconds."""
    model = build_child(arch, cfg.space, splits.in_channels, splits.num_classes, splits.image_size, seed,
                        cfg.train.init).to(device)
    check_mc_work(cfg.final.samples, model_weights(model), "final.samples (Monte-Carlo samples)")
    train = dataclasses.replace(cfg.train, epochs=cfg.final.epochs, lr=cfg.final.lr or cfg.train.lr)
    t0 = time.perf_counter()
    train_child(model, splits.train, cfg, train, seed, device, desc="final")
    t1 = time.perf_counter()
    sharded = parallel is not None and not parallel.in_process
    clean, accs = evaluate_under_noise(model, splits.test, k=0 if sharded else cfg.final.samples,
                                       noise=uae_noise(cfg), seed=derive_seed(seed, "mc"),
                                       batch_size=cfg.eval.batch_size, max_samples=cfg.final.max_test_samples,
                                       device=device, progress=cfg.progress)
    if sharded and cfg.final.samples > 0:
        dn = device_noise(cfg.noise, cfg.hardware.spec())
        res, execution = parallel_trials(model, splits.test, dn.spec if dn else None,
                                         dn.models if dn else [cfg.noise.defect()], cfg.final.samples,
                                         derive_seed(seed, "mc"), parallel=parallel, batch_size=cfg.eval.batch_size,
                                         device=str(device), max_samples=cfg.final.max_test_samples,
                                         progress=cfg.progress, periphery=dn.periphery if dn else None)
        accs = res.accs
        run.record_execution(stage="final", **execution)
    s = summarize(accs)
    return (model, {"seed": seed, "clean_acc": clean, **{k: s[k] for k in MC_FIELDS}, "mc_samples": s["n"]},
            (t1 - t0, time.perf_counter() - t1))


def final_evaluation(run: RunFolder, cfg: UAESearchConfig, splits: Any, device: torch.device,
                     parallel: Parallelism | None = None) -> dict:
    """`final.retrains` retrains + Monte-Carlo evaluations of best_arch.json's child in the open run folder; writes
    final.json (each retrain under "retrains"; clean_acc and the statistics at the top level are their means, and
    `retrain_std` their std over retrains, ddof 1). With `parallel` (several workers or a Ray address) the noise
    samples are sharded over Ray workers (the same accuracies: sample t is drawn from its index)."""
    check(run.has("best_arch.json"), f"{run.root} has no best_arch.json; finish the search first "
          "(`cimnas uae search --resume`)")
    best = run.read_result("best_arch.json")
    arch = UAEArch.from_dict(best["arch"])
    retrains, times = [], []
    for r in range(cfg.final.retrains):
        model, one, secs = _retrain_once(cfg, arch, _retrain_seed(cfg, arch, r), splits, device, parallel, run)
        retrains.append(one)
        times.append(secs)
        if r == 0:  # the checkpoint is the first retrain's model (the one a single-retrain run keeps)
            first = model
    means = {k: float(np.mean([x[k] for x in retrains])) for k in ("clean_acc", *MC_FIELDS)}
    result = {"label": cfg.label, "k": cfg.eval.k, "statistic": cfg.eval.statistic, "noise_aware": cfg.noise_aware(),
              "gaussian_sigma": cfg.noise.gaussian_sigma, "gaussian_mode": cfg.noise.gaussian_mode,
              "arch_key": arch.key(), "arch": arch.to_dict(),
              **means, "mc_samples": retrains[0]["mc_samples"], "search_time_s": best["search_time_s"],
              "search_time_h": best["search_time_s"] / 3600, "episodes": best["episodes"],
              "unique_children": best["unique_children"], "stop_reason": best["stop_reason"],
              "energy_uj": best["energy_uj"], "final_train_s": sum(t for t, _ in times),
              "final_eval_s": sum(e for _, e in times), "retrains": retrains,
              "retrain_std": {k: float(np.std([x[k] for x in retrains], ddof=1)) if len(retrains) > 1 else None
                              for k in ("clean_acc", "mean", "p5")}}
    run.save("final_model.pt", model_payload(first, dataset=_dataset_info(splits), config=to_dict(cfg),
                                             epoch=cfg.final.epochs,
                                             metrics={k: v for k, v in result.items() if isinstance(v, int | float)}))
    run.write_result("final.json", result)
    run.log(f"final: {len(retrains)} retrain(s): clean {pct(means['clean_acc'])}, mean {pct(means['mean'])}, "
            f"p5 {pct(means['p5'])} over {result['mc_samples']} noise samples each", echo=cfg.progress)
    return result


def final_command(out: str | Path, *, source: str | Path | None = None, overrides: list[str] | None = None,
                  parallel: Parallelism | None = None) -> dict:
    """`cimnas uae final`: the final stage of the search in `out`; with `source`, a new run folder `out` retrains
    `source`'s chosen child under `source`'s config changed by `overrides` (e.g. train.noise_aware=false)."""
    src = Path(source) if source is not None else Path(out)
    cfg = uae_search.load_run_config(src)
    if overrides:
        cfg = from_dict(UAESearchConfig, apply_overrides(to_dict(cfg), overrides))
        validate(cfg)
    check(source is None or Path(source).resolve() != Path(out).resolve(), "--from and --out must differ")
    device = resolve_device(cfg.device)
    best = src / "best_arch.json"
    check(best.is_file(), f"{src} has no best_arch.json; finish the search first (`cimnas uae search --resume`)")
    with uae_search.open_run(cfg, out, resume=source is None) as run:
        if source is not None:
            shutil.copyfile(best, run.path("best_arch.json"))
        return final_evaluation(run, cfg, uae_search.load_splits(cfg, device), device, parallel)
