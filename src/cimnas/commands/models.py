"""`cimnas models [--json]`: list the registered models, their docs and named architectures."""

from __future__ import annotations

import argparse
import json


def _run(args: argparse.Namespace) -> int:
    from cimnas.nn.models import NAMED_WIDTHS, list_models

    rows = list_models()
    if args.json:
        for r in rows:
            r["named_widths"] = {a: NAMED_WIDTHS[r["name"]][a] for a in r["named_architectures"]}
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        named = f"  [named: {', '.join(r['named_architectures'])}]" if r["named_architectures"] else ""
        print(f"{r['name']:<{width}}  {r['doc']}{named}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the registered models and named architectures")
    p.add_argument("--json", action="store_true", help="print JSON (with the named width lists)")
    p.set_defaults(func=_run)
