"""`cimnas study NAME ...`: the multi-run study drivers as sub-commands (each still runs as `python -m MODULE`).

A driver is a module with `main(argv, prog=...) -> int`; registering one is the one line of `STUDIES` below.
"""

from __future__ import annotations

import argparse
import importlib

#: study name -> (driver module, what it does). Add a driver with one line here.
STUDIES: dict[str, tuple[str, str]] = {
    "hawis": ("cimnas.pipelines.studies.hawis_study",
              "HAWIS study: DDPG vs random search vs U-kx as resumable parallel runs (also lambda, compare, spread)"),
    "headroom": ("cimnas.pipelines.studies.headroom",
                 "can any width allocation beat uniform widening at the same energy? (before any search)"),
    "hawis-aligned": ("cimnas.pipelines.studies.hawis_aligned",
                      "searches against the aligned-uniform baseline at each searched net's energy (issue 20)"),
    "uae": ("cimnas.pipelines.studies.uae_study",
            "UAE Table 3 study: QuantNAS / NACIM / UAE-M / UAE-95 over seeds, cross retrains, one report"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="multi-run studies (HAWIS, headroom, UAE Table 3): resumable, parallel",
                              description="Multi-run studies, each a folder of resumable run folders. "
                                          "`cimnas study NAME -h` shows a study's own commands and options.")
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, (module, text) in STUDIES.items():
        q = sub.add_parser(name, help=text, description=text, add_help=False)
        q.add_argument("args", nargs=argparse.REMAINDER, help="the study's own arguments (see -h)")
        q.set_defaults(func=run_study_driver, study_module=module, passthrough=True)


def run_study_driver(args) -> int:
    """Hand the study's arguments (and any options argparse left over) to its driver."""
    driver = importlib.import_module(args.study_module)
    return int(driver.main([*args.extra, *args.args], prog=f"cimnas study {args.study}") or 0)
