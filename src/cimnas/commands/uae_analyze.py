"""`cimnas uae analyze` (output-change analysis, UAE Sec. 3.2) and `cimnas uae table1` (UAE Table 1).

Registered by cimnas.commands.uae through `register_analyze(uae_subparsers)`; this module has no
top-level `register`, so the plugin loader does not add it twice.
"""

from __future__ import annotations

import argparse
import json
import sys

from cimnas.commands.hardware import add_gaussian_args
from cimnas.commands.model_source import add_source_args
from cimnas.errors import check


def register_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="Monte-Carlo output change under weight noise and its Gaussian fit (Eq. 3-6)")
    p.add_argument("--model", default="lenet5", help="model name (lenet = lenet5; mlp, resnet56, uae_cnn, ...), or "
                   "torchvision:NAME / timm:NAME")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (digits, mnist, fashion-mnist, cifar10)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: the dataset's usual places)")
    p.add_argument("--checkpoint", default=None, help="trained cimnas checkpoint (or a plain state_dict of "
                   "--model-file / --model torchvision:NAME); without it the model is trained")
    p.add_argument("--samples", type=int, default=10_000, help="noise samples S (default 10000; work limit: "
                   "samples x weights <= $CIMNAS_MAX_MC_WORK, default 1e11)")
    add_gaussian_args(p, 0.04, old_sigma="--sigma")
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
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--out", default="runs/uae-analyze", help="run folder (refused if it holds a run, see --resume)")
    p.add_argument("--resume", action="store_true", help="continue / re-report the run in --out (same settings)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_source_args(p, weights=False)
    p.set_defaults(func=cmd_analyze)

    t = sub.add_parser("table1", help="reproduce UAE Table 1 (Gaussian fit of several models, 3 inits each)")
    t.add_argument("--config", default="configs/uae/table1.yaml", help="Table 1 config YAML")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    t.add_argument("--out", default="runs/uae-table1", help="run folder")
    t.add_argument("--resume", action="store_true", help="continue the Table 1 run in --out (finished runs kept)")
    t.set_defaults(func=cmd_table1)


def analysis_config(args: argparse.Namespace):
    """The AnalysisConfig of the command line, validated (bad input fails before anything is loaded or written)."""
    from cimnas.commands.hardware import data_dir_arg
    from cimnas.commands.model_source import rules_of, source_of
    from cimnas.config import check_seed, from_dict, validate
    from cimnas.pipelines.uae.config import AnalysisConfig

    check_seed(args.seed, "--seed")
    data_dir_arg(args.data_dir)
    cfg = from_dict(AnalysisConfig, {
        "seed": args.seed, "device": args.device, "model": source_of(args) or args.model,
        "precision": args.precision, "rules": rules_of(args),
        "checkpoint": args.checkpoint, "element": args.element,
        "data": {"name": args.dataset, "data_dir": args.data_dir, "limit": args.train_limit},
        "train": {"epochs": args.epochs, "lr": args.lr},
        "noise": {"gaussian_sigma": args.gaussian_sigma, "gaussian_mode": args.gaussian_mode,
                  "cell_bits": args.cell_bits},
        "analysis": {"samples": args.samples, "bins": args.bins, "span": args.span,
                     "input_index": args.input_index, "seed": args.seed}})
    validate(cfg)
    return cfg


def cmd_analyze(args: argparse.Namespace) -> int:
    from cimnas.pipelines.uae.analysis_run import run_analysis

    cfg = analysis_config(args)
    res = run_analysis(cfg, args.out, resume=args.resume, progress=not args.json and sys.stderr.isatty())
    if args.json:
        sys.stdout.write(json.dumps(res) + "\n")
    else:
        print(f"chi2_mean = {res['chi2_mean']:.4g}  mse_mean = {res['mse_mean']:.4g}  "
              f"({cfg.analysis.samples} samples in {res['seconds_monte_carlo']:.1f} s)")
        print(f"wrote {args.out}/analysis.json, {res['figure']}")
    return 0


def cmd_table1(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cimnas.config import load_config
    from cimnas.pipelines.uae.config import Table1Config
    from cimnas.pipelines.uae.table1 import run_table1

    check(Path(args.config).is_file(), f"config file {args.config} not found; pass --config FILE")
    cfg = load_config(Table1Config, args.config, args.set)
    res = run_table1(cfg, args.out, resume=args.resume, progress=sys.stderr.isatty())
    print((Path(args.out) / "table1.md").read_text(), end="")
    return 0 if res["rows"] else 1
