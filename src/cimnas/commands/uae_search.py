"""`cimnas uae search | final | report`: the UAE uncertainty-aware architecture search.

`register_search(uae_subparsers)` is called by `commands/uae.py` (the `cimnas uae` parent).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cimnas.errors import CimnasError
from cimnas.parallel import add_parallel_args, parallelism_from_args


def _search(args: argparse.Namespace) -> int:
    from cimnas import distributed
    from cimnas.config import load_config
    from cimnas.pipelines.uae.config import UAESearchConfig
    from cimnas.pipelines.uae.search import load_run_config, run_search

    distributed.refuse_launch("cimnas uae search")

    if args.config is None:
        if not args.resume:
            raise CimnasError("give --config FILE (or --resume to continue the run in --out)")
        if args.set:
            raise CimnasError("--set needs --config (a resumed run keeps its saved config)")
        cfg = load_run_config(args.out)
    else:
        cfg = load_config(UAESearchConfig, args.config, args.set)
    result = run_search(cfg, args.out, resume=args.resume, run_final=not args.no_final,
                        parallel=parallelism_from_args(args))
    print(json.dumps(result, indent=2) if args.json else _line(result))
    return 0


def _line(r: dict) -> str:
    if "clean_acc" in r:
        return (f"{r['label']}: clean {100 * r['clean_acc']:.2f}%  mean {100 * r['mean']:.2f}%  "
                f"95%-min (p5) {100 * r['p5']:.2f}%  ({r['mc_samples']} MC samples, search {r['search_time_h']:.3f} h, "
                f"{r['episodes']} episodes)")
    return f"{r['label']}: best reward {r['best_reward']:.4f} after {r['episodes']} episodes ({r['arch_key']})"


def _final(args: argparse.Namespace) -> int:
    from cimnas.pipelines.uae.final import final_command

    if args.set and args.source is None:
        raise CimnasError("--set needs --from RUN (a new run folder for the changed config); `uae final --out RUN` "
                          "keeps RUN's config")
    result = final_command(args.out, source=args.source, overrides=args.set, parallel=parallelism_from_args(args))
    print(json.dumps(result, indent=2) if args.json else _line(result))
    return 0


def _report(args: argparse.Namespace) -> int:
    from cimnas.reports.uae_search import episode_log, make_figures, table3
    from cimnas.utils.io import atomic_write_bytes, check_output

    if args.out:  # before anything is read or drawn: never a run's own file, a folder, a link, a FIFO or a device
        check_output(args.out, inputs=args.runs)
    text = table3(args.runs)  # every run's final.json and episode log checked before any figure is (re)drawn
    logs = [episode_log(d) for d in args.runs]
    for d, log in zip(args.runs, logs, strict=True):
        make_figures(d, log)
    if args.out:
        atomic_write_bytes(Path(args.out), (text + "\n").encode())
    print(text)
    return 0


def register_search(uae_subparsers: argparse._SubParsersAction) -> None:
    """Add `search`, `final` and `report` under `cimnas uae`."""
    p = uae_subparsers.add_parser("search", help="uncertainty-aware architecture search (UAE / NACIM / QuantNAS)")
    p.add_argument("--config", help="YAML config (configs/uae/*.yaml); optional with --resume")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--no-final", action="store_true", help="stop after the search (run `final` later)")
    p.add_argument("--json", action="store_true", help="print final.json")
    add_parallel_args(p)  # --workers N: the children of each controller batch in parallel (same episodes.jsonl)
    p.set_defaults(func=_search)
    p = uae_subparsers.add_parser("final", help="retrain the best child of a search run + Monte-Carlo evaluation")
    p.add_argument("--out", required=True, help="run folder of a finished search (or, with --from, a new folder)")
    p.add_argument("--from", dest="source", default=None,
                   help="search run whose chosen child is retrained into the new folder --out (with --set changes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config change for --from (e.g. train.noise_aware=false)")
    p.add_argument("--json", action="store_true", help="print final.json")
    add_parallel_args(p)  # --workers N: the Monte-Carlo samples sharded (same statistics)
    p.set_defaults(func=_final)
    p = uae_subparsers.add_parser("report", help="figures per run and a UAE Table-3 markdown table")
    p.add_argument("--runs", nargs="+", required=True, help="run folders with final.json")
    p.add_argument("--out", help="write the table to this file as well")
    p.set_defaults(func=_report)
