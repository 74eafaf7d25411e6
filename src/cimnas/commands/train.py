"""`cimnas train --config FILE [--set section.key=value ...] --out DIR [--resume]`."""

from __future__ import annotations

import argparse
import json
import sys

from cimnas.commands.model_source import add_source_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train one model on one dataset into a run folder (resumable)",
        description="Train a float, k-bit or fully binarized model on search_train (val accuracy on the held-out "
                    "search_eval part, test accuracy once at the end). The run folder gets run.json, config.yaml, "
                    "metrics.jsonl, checkpoints/checkpoint.pt (every epoch) and final.json.")
    p.add_argument("--config", help="YAML config (configs/train/*.yaml); defaults: binarized ResNet-20 on digits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set train.epochs=5 --set seed=1")
    p.add_argument("--data-dir", help="shortcut for --set data.data_dir=DIR")
    p.add_argument("--out", required=True, help="run folder (must not hold a run unless --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (an empty or missing folder starts fresh)")
    p.add_argument("--model", default=None, help="shortcut for --set model.name=NAME: a cimnas model, or "
                   "torchvision:NAME / timm:NAME (optional extras, no pretrained download)")
    p.add_argument("--precision", default=None, help="shortcut for --set model.precision=... (binary, kbit, float); "
                   "an outside model's layers no --rule names get it")
    p.add_argument("--gaussian-sigma", "--noise-sigma", dest="noise_sigma", type=float, default=None,
                   help="noise-aware training: shortcut for --set noise.gaussian_sigma=S (a fresh Gaussian sample on "
                        "the quantized weights every batch, UAE Sec. 4.2; --noise-sigma: old name)")
    add_source_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cimnas import distributed
    from cimnas.commands.hardware import data_dir_arg
    from cimnas.commands.model_source import rules_of, source_of
    from cimnas.config import load_config, validate
    from cimnas.pipelines.train import TrainRunConfig, run_training

    # an explicit --config that sets nothing is refused by load_config (cimnas.config.read_yaml), not "use defaults"
    overrides = list(args.overrides)
    if data_dir_arg(args.data_dir):
        overrides.append(f"data.data_dir={args.data_dir}")
    source = source_of(args)
    for key, value in (("model.name", source or args.model), ("model.precision", args.precision),
                       ("noise.gaussian_sigma", args.noise_sigma), ("model.weights", args.weights)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # JSON is YAML: a path or a name stays a string
    cfg = load_config(TrainRunConfig, args.config, overrides)
    if args.rules or args.keep_digital:
        cfg.model.rules = {**cfg.model.rules, **rules_of(args)}
        validate(cfg)
    try:
        final = run_training(cfg, args.out, resume=args.resume)
    finally:
        distributed.shutdown()  # under torchrun: leave the process group (a no-op otherwise)
    if not final:  # a rank > 0 under torchrun: rank 0 reports
        return 0
    from cimnas.utils.units import pct, uj

    summary = {k: final[k] for k in ("test_acc", "val_acc", "epochs", "biops", "flops", "params", "energy_uj")}
    sys.stdout.write(f"test accuracy {pct(final['test_acc'])} (val {pct(final['val_acc'])}) after "
                     f"{final['epochs']} epochs; BiOps {final['biops']:,}, FLOPs {final['flops']:,}; energy "
                     f"{uj(final['energy_uj'])} on {final['hardware_preset']}; run folder {args.out}\n")
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
