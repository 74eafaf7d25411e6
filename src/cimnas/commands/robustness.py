"""`cimnas robustness`: Monte-Carlo accuracy of trained models under device defects (HAWIS Fig. 3), a sweep over
defect levels, and accuracy over time with a device preset (commands/devices.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cimnas.commands.devices import add_device_args, check_device_flags, preset_from_args, run_over_time, wants_devices
from cimnas.commands.hardware import _spec_args, add_gaussian_args, data_dir_arg, spec_from_args
from cimnas.commands.model_source import add_source_args, check_no_source_flags, rules_of, source_of
from cimnas.errors import CimnasError, check
from cimnas.parallel import add_parallel_args, parallelism_from_args


def register(subparsers) -> None:
    r = subparsers.add_parser("robustness", help="Monte-Carlo accuracy under ReRAM defects (HAWIS Fig. 3)")
    r.add_argument("--checkpoint", action="append", required=True, help="model checkpoint (repeat for --sweep); a "
                   "plain PyTorch state_dict counts as one with --model-file / --model and --dataset")
    r.add_argument("--model", default=None, help="for a plain state_dict: torchvision:NAME / timm:NAME")
    r.add_argument("--precision", default="binary", help="for a plain state_dict: the precision of layers no --rule "
                   "names (binary, kbit, kbit:BITS, float)")
    r.add_argument("--labels", default=None, help="comma-separated curve labels, one per checkpoint")
    # one name per defect setting across commands (README "One vocabulary"); the old flags are read for one release
    r.add_argument("--sa0-rate", "--sa0", dest="sa0_rate", type=float, default=0.0,
                   help="stuck-at-0 rate per cell, stuck at Gmax (defects.sa0_rate; --sa0: old name)")
    r.add_argument("--sa1-rate", "--sa1", dest="sa1_rate", type=float, default=0.0,
                   help="stuck-at-1 rate per cell, stuck at Gmin (defects.sa1_rate; --sa1: old name)")
    r.add_argument("--variation-sigma", "--sigma", dest="variation_sigma", type=float, default=0.0,
                   help="lognormal resistance variation sigma, HAWIS Eq. 3 (defects.variation_sigma; --sigma: "
                        "old name)")
    add_gaussian_args(r, 0.0, old_sigma="--gaussian")
    r.add_argument("--trials", type=int, default=10, help="Monte-Carlo trials: independent defect draws per model")
    r.add_argument("--seed", type=int, default=0, help="seed of the defect draws (trial t uses a seed derived from it)")
    r.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    r.add_argument("--data-dir", default=None, help="folder of the dataset files (default: the dataset's usual places)")
    r.add_argument("--split", default="test", choices=["test", "search_eval", "train"], help="split to evaluate")
    r.add_argument("--max-samples", type=int, default=None, help="evaluate at most this many samples")
    r.add_argument("--batch-size", type=int, default=512, help="evaluation batch size")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    r.add_argument("--sweep", action="store_true", help="sweep SA0, SA1 and variation levels (Fig. 3)")
    r.add_argument("--sa0-rate-levels", "--sa0-levels", dest="sa0_rate_levels", default=None,
                   help="comma-separated SA0 rates for --sweep (--sa0-levels: the old name, kept for one release)")
    r.add_argument("--sa1-rate-levels", "--sa1-levels", dest="sa1_rate_levels", default=None,
                   help="comma-separated SA1 rates for --sweep (--sa1-levels: the old name, kept for one release)")
    r.add_argument("--variation-sigma-levels", "--sigma-levels", dest="variation_sigma_levels", default=None,
                   help="comma-separated variation sigmas for --sweep (--sigma-levels: the old name, kept for one "
                   "release)")
    r.add_argument("--out", default=None, help="folder for robustness.json and robustness.png (--sweep)")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _spec_args(r)
    add_device_args(r)  # --device-model PRESET --time 0,1h,1d,1y: accuracy over time (commands/devices.py)
    add_parallel_args(r)  # --workers N: trials (or sweep levels) as Ray tasks; same numbers for any N
    add_source_args(r, weights=False)
    r.set_defaults(func=cmd_robustness)


def _float_list(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        out = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise CimnasError(f"{what} must be comma-separated numbers, got {text!r}") from e
    check(bool(out), f"{what} is empty; give comma-separated levels (or leave it out for the default sweep)")
    return out


def _check_sweep_flags(args) -> None:
    """--sweep sweeps one defect kind at a time over its own levels; the single-point flags do not apply to it, and
    the sweep's flags do not apply without it (either would be silently ignored)."""
    levels = [f for f in ("sa0_rate_levels", "sa1_rate_levels", "variation_sigma_levels")
              if getattr(args, f) is not None]
    if args.sweep:
        point = [f"--{f.replace('_', '-')}" for f in ("sa0_rate", "sa1_rate", "variation_sigma", "gaussian_sigma")
                 if getattr(args, f) != 0.0]
        check(not point, f"{', '.join(point)}: one defect model, but --sweep sweeps each kind over its own levels "
              "(--sa0-rate-levels, --sa1-rate-levels, --variation-sigma-levels); drop them or --sweep")
        return
    check(not levels, f"--{levels[0].replace('_', '-') if levels else ''} applies to --sweep only; add --sweep or "
          "use --sa0-rate / --sa1-rate / --variation-sigma for one defect model")
    check(args.out is None, "--out applies to --sweep only (it writes robustness.json and robustness.png); add "
          "--sweep, or use --json to print the result")


def default_labels(checkpoints: list[str]) -> list[str]:
    """Curve labels from the run folders (`runs/u1x/checkpoints/checkpoint.pt` -> `u1x`), the file name added where
    two would be the same, the whole path where that is still not enough."""
    def folder(p: Path) -> str:
        return (p.parent.parent if p.parent.name == "checkpoints" else p.parent).name or p.stem

    paths = [Path(c) for c in checkpoints]
    for make in (folder, lambda p: f"{folder(p)}/{p.stem}", str):
        labels = [make(p) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def clean_accuracy(model, split, args, device: str) -> float:
    """Accuracy with ideal devices on the evaluated samples (the robustness table's reference column)."""
    from cimnas.hardware.montecarlo import CachedBatches, accuracy

    return accuracy(model.to(device), CachedBatches(split, args.batch_size, device, args.max_samples))


def cmd_robustness(args) -> int:
    from cimnas.data import load_dataset
    from cimnas.device import resolve_device
    from cimnas.hardware.defects import DefectConfig
    from cimnas.hardware.mc_parallel import parallel_sweep, parallel_trials
    from cimnas.hardware.montecarlo import (
        DEFAULT_SWEEP,
        check_mc_work,
        model_weights,
        robustness_sweep,
    )
    from cimnas.nn.zoo import load_any

    spec = spec_from_args(args, ("accuracy",))
    par = parallelism_from_args(args)
    device = str(resolve_device(args.device))  # an unknown or absent device is refused before any loading
    data_dir_arg(args.data_dir)
    from cimnas.config import check_seed

    check_seed(args.seed, "--seed")
    if wants_devices(args):  # a bad preset, file, field or time is refused before any loading
        check_device_flags(args)
        preset_from_args(args)
    else:
        _check_sweep_flags(args)
    check(args.trials >= 1, f"--trials must be >= 1, got {args.trials}")
    check(args.max_samples is None or args.max_samples >= 1,
          f"--max-samples must be >= 1 (or left out for the whole split), got {args.max_samples}")
    check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    defects = DefectConfig(args.sa0_rate, args.sa1_rate, args.variation_sigma, args.gaussian_sigma, args.gaussian_mode)
    defects.validate()
    labels = args.labels.split(",") if args.labels else default_labels(args.checkpoint)
    check(len(labels) == len(args.checkpoint),
          f"--labels has {len(labels)} names for {len(args.checkpoint)} checkpoints")
    check(len(set(labels)) == len(labels), "curve labels must be distinct; pass --labels")
    sweep = None
    if args.sweep:
        sweep = {"sa0": _float_list(args.sa0_rate_levels, "--sa0-rate-levels") or DEFAULT_SWEEP["sa0"],
                 "sa1": _float_list(args.sa1_rate_levels, "--sa1-rate-levels") or DEFAULT_SWEEP["sa1"],
                 "variation": (_float_list(args.variation_sigma_levels, "--variation-sigma-levels")
                               or DEFAULT_SWEEP["variation"])}
        for kind, levels in sweep.items():
            for lv in levels:
                check(lv >= 0 and (kind == "variation" or lv <= 1), f"{kind} level {lv} out of range")
        if args.out:
            out = Path(args.out)
            check(not out.exists() or out.is_dir(), f"--out {out} is a file; give a folder for robustness.json and "
                  "robustness.png")
            check(not (out / "robustness.json").exists(),
                  f"{out / 'robustness.json'} exists; choose a new --out folder")
            from cimnas.utils.io import check_output

            for name in ("robustness.json", "robustness.png"):  # no link, FIFO or device; never a checkpoint read
                check_output(out / name, inputs=args.checkpoint)
    models, dataset = {}, args.dataset
    check(args.model is None or ":" in args.model, f"--model {args.model}: a checkpoint names its cimnas model "
          "itself; --model here takes torchvision:NAME / timm:NAME for a plain state_dict")
    source = source_of(args)
    if source is None:
        check_no_source_flags(args)
    shape_kw = {}
    if source is not None and args.dataset:
        from cimnas.data import DATASETS

        ds = DATASETS.create(args.dataset)
        shape_kw = {"in_channels": ds.in_channels, "num_classes": ds.num_classes, "image_size": ds.image_size}
    for label, path in zip(labels, args.checkpoint, strict=True):
        model, ckpt = load_any(path, source, rules=rules_of(args), default=args.precision, **shape_kw)
        models[label] = model
        check_mc_work(args.trials, model_weights(model), f"--trials (Monte-Carlo trials of {label})")
        dataset = dataset or ckpt.get("dataset", {}).get("name")
    check(dataset is not None, "the checkpoint names no dataset; pass --dataset")
    splits = load_dataset(dataset, data_dir=args.data_dir, seed=0)
    split = getattr(splits, args.split)
    progress = sys.stderr.isatty()
    if wants_devices(args):
        return run_over_time(args, models, split, spec, dataset)
    if sweep is None and not any((args.sa0_rate, args.sa1_rate, args.variation_sigma, args.gaussian_sigma)):
        sys.stderr.write(f"cimnas: warning: no defect set, so the {args.trials} trials are identical clean "
                         "evaluations; set --sa0-rate / --sa1-rate / --variation-sigma / --gaussian-sigma\n")
    if sweep is None:
        results = {}
        execution: dict = {"engine": "in-process", "workers": 1}
        for label, model in models.items():
            res, execution = parallel_trials(model, split, spec, defects, args.trials, args.seed, parallel=par,
                                             batch_size=args.batch_size, device=device,
                                             max_samples=args.max_samples, progress=progress)
            results[label] = {"clean": clean_accuracy(model, split, args, device), **res.to_dict()}
        payload = {"dataset": dataset, "split": args.split, "trials": args.trials, "seed": args.seed,
                   "defects": vars(defects), "preset": spec.name, "models": results, "execution": execution}
        if args.json:
            print(json.dumps(payload, indent=2))
        else:
            print(f"{'model':<20}{'clean %':>8}{'mean %':>8}{'std':>7}{'min':>7}{'p5':>7}{'max':>7}"
                  f"  ({args.trials} trials, {dataset})")
            for label, r in results.items():
                print(f"{label:<20}{100 * r['clean']:>8.2f}{100 * r['mean']:>8.2f}{100 * r['std']:>7.2f}"
                      f"{100 * r['min']:>7.2f}{100 * r['p5']:>7.2f}{100 * r['max']:>7.2f}")
        return 0
    if par.in_process:
        res = robustness_sweep(models, split, spec, sweep, args.trials, args.seed, args.batch_size, device,
                               max_samples=args.max_samples, progress=progress)
        res["execution"] = {"engine": "in-process", "workers": 1}
    else:
        res, res["execution"] = parallel_sweep(models, split, spec, sweep, args.trials, args.seed, parallel=par,
                                               batch_size=args.batch_size, device=device,
                                               max_samples=args.max_samples, progress=progress)
    res.update(dataset=dataset, split=args.split, checkpoints=dict(zip(labels, args.checkpoint, strict=True)))
    if args.out:
        from cimnas.reports.robustness_plot import plot_robustness
        from cimnas.utils.io import write_json

        out = Path(args.out)
        write_json(out / "robustness.json", res)
        plot_robustness(res, out / "robustness.png", title=f"{dataset}: accuracy under ReRAM defects")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for kind, block in res["kinds"].items():
            print(f"{kind}: levels {block['levels']}")
            for label, rows in block["models"].items():
                print(f"  {label:<18}" + " ".join(f"{100 * r['mean']:6.2f}+-{100 * r['std']:.2f}" for r in rows))
        if args.out:
            print(f"wrote {Path(args.out) / 'robustness.json'} and robustness.png")
    return 0


