"""`cimnas uae analyze` (output-change analysis, UAE Sec. 3.2) and `cimnas uae table1` (UAE Table 1).

Registered by cimnas.commands.uae through `register_analyze(uae_subparsers)`; this module has no
top-level `register`, so the plugin loader does not add it twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cimnas.errors import CimnasError, check


def register_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="Monte-Carlo output change under weight noise and its Gaussian fit (Eq. 3-6)")
    p.add_argument("--model", default="lenet5", help="model name (lenet = lenet5; mlp, resnet56, uae_cnn, ...)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (digits, mnist, fashion-mnist, cifar10)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: the dataset's usual places)")
    p.add_argument("--checkpoint", default=None, help="trained cimnas checkpoint; without it the model is trained")
    p.add_argument("--samples", type=int, default=10_000, help="noise samples S (default 10000)")
    p.add_argument("--sigma", type=float, default=0.04, help="noise std (default 0.04)")
    p.add_argument("--mode", default="absolute", help="absolute | relative | bitsliced")
    p.add_argument("--cell-bits", type=int, default=4, help="bits per device in bitsliced mode")
    p.add_argument("--bins", type=int, default=100, help="bins N of Eq. 5-6 (default 100)")
    p.add_argument("--span", type=float, default=4.0, help="bins cover mean +- span*std (tails folded)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, training order and noise")
    p.add_argument("--input-index", type=int, default=0, help="test image used as the fixed input")
    p.add_argument("--element", type=int, default=0, help="output element shown in the figure")
    p.add_argument("--epochs", type=int, default=2, help="training epochs when no checkpoint is given")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate when training")
    p.add_argument("--train-limit", type=int, default=None, help="use at most this many training images")
    p.add_argument("--precision", default="float", help="float | kbit (build_model precision)")
    p.add_argument("--out", default="runs/uae-analyze", help="output folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=cmd_analyze)

    t = sub.add_parser("table1", help="reproduce UAE Table 1 (Gaussian fit of several models, 3 inits each)")
    t.add_argument("--config", default="configs/uae/table1.yaml", help="Table 1 config YAML")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    t.add_argument("--out", default="runs/uae-table1", help="output folder (re-running continues it)")
    t.set_defaults(func=cmd_table1)


def cmd_analyze(args: argparse.Namespace) -> int:
    from cimnas.uae.analysis_run import AnalysisSettings, TrainSettings

    settings = AnalysisSettings(samples=args.samples, sigma=args.sigma, mode=args.mode, bins=args.bins,
                                span=args.span, cell_bits=args.cell_bits, input_index=args.input_index,
                                seed=args.seed)
    settings.validate()  # bad input fails before anything is loaded or written
    train = TrainSettings(epochs=args.epochs, lr=args.lr)
    train.validate()
    check(args.element >= 0, f"--element must be >= 0, got {args.element}")
    out = Path(args.out)
    check(not out.exists() or out.is_dir(), f"--out {out} exists and is not a folder")
    return _run_analyze(args, settings, train, out)


def _run_analyze(args, settings, train, out: Path) -> int:
    import torch

    from cimnas.data import load_dataset
    from cimnas.reports.uae_analysis_plot import plot_output_change
    from cimnas.uae.analysis_run import analyze, build_analysis_model, canonical_model, pick_input, train_model
    from cimnas.utils.io import save_checkpoint, write_json
    from cimnas.utils.seed import seed_everything

    splits = load_dataset(args.dataset, args.data_dir, seed=args.seed, limit=args.train_limit)
    check(args.input_index < len(splits.test),
          f"--input-index {args.input_index} is outside the test set (0..{len(splits.test) - 1})")
    info: dict = {"dataset": args.dataset, "model": canonical_model(args.model)}
    if args.checkpoint:
        from cimnas.nn.models import load_model

        model, ckpt = load_model(args.checkpoint)
        info["checkpoint"] = str(args.checkpoint)
        info["test_acc"] = (ckpt.get("metrics") or {}).get("test_acc")
    else:
        seed_everything(args.seed)
        model = build_analysis_model(args.model, splits, {"precision": args.precision})
        log = train_model(model, splits, train, args.seed, progress=not args.json)
        info["test_acc"], info["epochs"] = log["test_acc"], train.epochs
    x, label = pick_input(splits, settings.input_index)
    with torch.no_grad():
        n_out = model.eval()(x).shape[1]
    check(args.element < n_out, f"--element must be < {n_out} (number of outputs), got {args.element}")
    res = analyze(model, x, settings, progress=not args.json)
    values = res.pop("values")
    res.update(info, input_index=settings.input_index, input_label=label)
    out.mkdir(parents=True, exist_ok=True)
    if not args.checkpoint:
        save_checkpoint(out / "model.pt", {
            "format": "cimnas-checkpoint-v1", "arch": getattr(model, "arch_meta", {}),
            "state_dict": model.state_dict(),
            "dataset": {"name": splits.name, "in_channels": splits.in_channels,
                        "image_size": splits.image_size, "num_classes": splits.num_classes},
            "config": vars(args) | {"func": None}, "epoch": train.epochs, "optimizer": None,
            "metrics": {"test_acc": info["test_acc"]}})
    write_json(out / "analysis.json", res)
    e = args.element
    fig = plot_output_change(values[:, e], res["mean"][e], res["std"][e], out / f"output_change_elem{e}.png",
                             bins=settings.bins, span=settings.span, chi2=res["chi2"][e],
                             title=f"{info['model']} output {e}, sigma={settings.sigma} ({settings.mode})")
    if args.json:
        sys.stdout.write(json.dumps(res) + "\n")
    else:
        print(f"chi2_mean = {res['chi2_mean']:.4g}  mse_mean = {res['mse_mean']:.4g}  "
              f"({settings.samples} samples in {res['seconds_monte_carlo']:.1f} s)")
        print(f"wrote {out / 'analysis.json'}, {fig}")
    return 0


def cmd_table1(args: argparse.Namespace) -> int:
    from cimnas.config import load_config
    from cimnas.uae.analysis_run import Table1Config, run_table1

    check(Path(args.config).is_file(), f"config file {args.config} not found; pass --config FILE")
    cfg = load_config(Table1Config, args.config, args.set)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CimnasError(f"--out {out} exists and is not a folder")
    res = run_table1(cfg, out, progress=sys.stderr.isatty())
    print((out / "table1.md").read_text(), end="")
    return 0 if res["rows"] else 1
