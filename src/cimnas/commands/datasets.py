"""`cimnas datasets [--json] [--data-dir DIR]`: registered datasets, their shapes and availability."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("datasets", help="list datasets (shape, classes, whether the files are present)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    p.add_argument("--data-dir", help="check availability in this folder instead of the default places")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cimnas.data import dataset_table

    rows = dataset_table(args.data_dir)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    sys.stdout.write(f"{'name':<14} {'shape':<10} {'classes':>7} {'train':>8} {'test':>6}  available\n")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        avail = "yes " + r["where"] if r["available"] else "no: " + r["where"]
        sys.stdout.write(f"{r['name']:<14} {shape:<10} {r['classes']:>7} {r['train']:>8} {r['test']:>6}  {avail}\n")
    return 0
