"""`cimnas hawis run|pretrain|search|retrain|report|rank-check`: the HAWIS pipeline (stages A -> B -> C) and the
super-net ranking check. `hawis pretrain` and `hawis retrain` also run data-parallel under
`torchrun --nproc_per_node N -m cimnas hawis ...` (docs/scale.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cimnas.parallel import add_parallel_args, parallelism_from_args
from cimnas.utils.units import pct, uj

STAGES = {
    "run": ("pretrain", "search", "retrain", "report"),
    "pretrain": ("pretrain",),
    "search": ("pretrain", "search"),
    "retrain": ("retrain",),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("hawis", help="HAWIS hardware-aware width search for fully binarized networks",
                              description="HAWIS: stage A pretrains a slimmable binarized super-net, stage B "
                                          "searches per-layer widths with a DDPG (or random) agent rewarded by "
                                          "accuracy and crossbar energy (Eq. 5), stage C retrains the best widths "
                                          "and measures accuracy, energy and robustness.")
    sub = p.add_subparsers(dest="hawis_command", metavar="STAGE", parser_class=type(p))
    sub.required = True
    helps = {
        "run": "stages A -> B -> C and the report into --out (resumable)",
        "pretrain": "stage A only: slimmable pretraining of the super-net",
        "search": "stage B (after A, which is skipped when done): the width search",
        "retrain": "stage C only: retrain the best (or retrain.widths) architecture on search_train; "
                   "validation accuracy on the held-out split, test accuracy once",
    }
    for name, text in helps.items():
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--config", help="YAML config (configs/hawis/*.yaml); stage commands default to the "
                                        "run folder's config.yaml")
        q.add_argument("--out", required=True, help="run folder")
        q.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config value (repeatable), e.g. --set search.episodes=10")
        if name == "run":
            q.add_argument("--resume", action="store_true",
                           help="continue the run in --out (its config must match)")
        if name in ("run", "retrain"):
            add_parallel_args(q)  # --workers N: the stage-C models in parallel (same stage_c.json)
        q.set_defaults(func=_run_stage, stage=name)
    r = sub.add_parser("report", help="regenerate figures and table.md of a run folder",
                       description="Regenerate the Fig. 1/4/5-style plots and the Table II-style table.md.")
    r.add_argument("run_dir", help="HAWIS run folder")
    r.set_defaults(func=_report)
    text = ("does the stage-A super-net rank width vectors like their stand-alone validation accuracies? "
            "(Kendall tau, Spearman rho with 95 %% intervals, scatter plot; never reads the test split)")
    c = sub.add_parser("rank-check", help=text, description=text.replace("%%", "%"))  # help is %-formatted
    c.add_argument("run_dir", help="HAWIS run folder with a finished stage A (checkpoints/supernet.pt)")
    c.add_argument("--archs", help="YAML/JSON list of {name, widths}")
    c.add_argument("--standalone", metavar="HEADROOM_DIR", action="append", help="headroom study (or earlier "
                   "rank-check) folder: its architectures (unless --archs) and their stand-alone val accuracies "
                   "(mean over seeds); repeatable (the first folder holding a width vector wins); others are "
                   "trained here")
    c.add_argument("--candidate-ft", action="store_true", help="candidate fine-tune before each proxy evaluation "
                   "(search.env.candidate_epochs; weights restored after)")
    c.add_argument("--out", help="output run folder (default RUN_DIR/rank_check)")
    c.add_argument("--proxy-only", action="store_true", help="compute the proxies only (stand-alone models and "
                   "statistics later, with --resume)")
    c.add_argument("--resume", action="store_true", help="continue --out, keeping every finished architecture")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change search.env.* (proxy) or retrain.* (stand-alone training) of the run's config")
    c.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the intervals")
    c.set_defaults(func=_rank_check)


def _run_stage(args: argparse.Namespace) -> int:
    from cimnas import distributed
    from cimnas.errors import CimnasError
    from cimnas.pipelines.hawis import load_hawis_config, run_pipeline
    from cimnas.pipelines.hawis.stage_c import TORCHRUN_AND_RAY

    if args.stage in ("run", "search"):  # stages A and C only have a data-parallel path
        distributed.refuse_launch(f"cimnas hawis {args.stage}", "stage B's episodes are one driver")
    parallel = parallelism_from_args(args) if hasattr(args, "workers") else None
    if distributed.launched() and parallel is not None and not parallel.in_process:
        raise CimnasError(TORCHRUN_AND_RAY)
    config = args.config
    resume = bool(getattr(args, "resume", False)) or args.stage != "run"
    if config is None:
        if args.stage == "run" and not (Path(args.out) / "config.yaml").is_file():
            raise CimnasError("cimnas hawis run needs --config FILE (e.g. configs/hawis/demo.yaml)")
        config = Path(args.out) / "config.yaml"
        if not config.is_file():
            raise CimnasError(f"no --config given and {args.out} holds no config.yaml")
    cfg = load_hawis_config(config, args.overrides)
    try:
        summary = run_pipeline(cfg, args.out, resume=resume, stages=STAGES[args.stage], parallel=parallel)
    finally:
        distributed.shutdown()  # under torchrun: leave the process group (a no-op otherwise)
    if summary:  # empty on a rank > 0 under torchrun: rank 0 reports
        _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    out = sys.stdout
    out.write(f"\nHAWIS run folder: {summary['run_dir']} ({summary['wall_s']:.0f} s)\n")
    if "best" in summary:
        b = summary["best"]
        out.write(f"  search best (episode {b['episode']}): reward {b['reward']:+.4f}, held-out acc "
                  f"{pct(b['accuracy'])}, energy {uj(b['energy_uj'])}\n")
    if "final" in summary:
        f = summary["final"]
        out.write(f"  final model: test accuracy {pct(f['test_accuracy'])} (held-out val "
                  f"{pct(f['val_accuracy'])}), energy {uj(f['energy_uj'])}, "
                  f"BiOps {f['biops']:,}, FLOPs {f['flops']:,}\n")
        out.write(f"  widths: {f['widths']}\n")
        if f.get("robustness"):
            r = f["robustness"]
            sigma = r.get("variation_sigma", r.get("sigma"))  # "sigma": runs written before the rename
            out.write(f"  robustness (SA0 {r['sa0_rate']}, SA1 {r['sa1_rate']}, variation_sigma {sigma}, "
                      f"{r['trials']} trials): mean {pct(r['mean'])}, p5 {pct(r['p5'])}\n")
    if summary.get("figures"):
        out.write("  figures: " + ", ".join(summary["figures"]) + "\n")
    if (summary.get("final") or {}).get("seed_comparison"):
        out.write(summary["final"]["seed_comparison"]["sentence"] + "\n")  # the run's verdict, last


def _report(args: argparse.Namespace) -> int:
    from cimnas.reports.hawis_plots import make_report

    paths = make_report(args.run_dir)
    sys.stdout.write("wrote " + ", ".join(paths) + "\n")
    return 0


def _rank_check(args: argparse.Namespace) -> int:
    from cimnas.pipelines.hawis.rank_check import run_rank_check, table

    result = run_rank_check(args.run_dir, archs_file=args.archs, standalone_dir=args.standalone, out=args.out,
                            candidate_ft=args.candidate_ft, resume=args.resume, overrides=args.overrides,
                            resamples=args.resamples, proxy_only=args.proxy_only)
    if args.proxy_only:
        for r in result["proxy"]:
            sys.stdout.write(f"{r['name']}: proxy {pct(r['proxy_accuracy'])}, energy {uj(r['energy_uj'])}\n")
        return 0
    sys.stdout.write(table(result))
    return 0
