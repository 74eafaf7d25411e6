"""`cimnas report RUN_OR_STUDY... --html OUT.html` (one self-contained page, cimnas.reports.html) and
`cimnas show RUN` (what a run found, as a short terminal table, cimnas.reports.summary). Both only read the
folders; what they cannot show is one line on stderr (and, in the page, a line in its 'Not shown' box)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    text = ("one self-contained HTML page (inline figures and styles, no network) of run and study folders; "
            "several folders get a side-by-side comparison")
    p = subparsers.add_parser("report", help=text, description=text)
    p.add_argument("folders", nargs="+", metavar="RUN_OR_STUDY", help="run or study folders (read only)")
    p.add_argument("--html", required=True, metavar="OUT.html", help="the page to write")
    p.set_defaults(func=_report)
    text = "what a run found, as a short table (rich when installed, else plain text)"
    s = subparsers.add_parser("show", help=text, description=text)
    s.add_argument("run", help="run folder")
    s.set_defaults(func=_show)


def _report(args: argparse.Namespace) -> int:
    from cimnas.reports.html import write_report

    out, problems = write_report(args.folders, args.html)
    sys.stdout.write(f"wrote {out}" + (f" ({len(problems)} things not shown: see the page)" if problems else "")
                     + "\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    from cimnas.errors import CimnasError
    from cimnas.reports.summary import show_text

    text, problems = show_text(args.run)
    if not text:
        raise CimnasError(problems[0] if problems else f"{args.run}: nothing to show")
    sys.stdout.write(text)
    for p in problems:
        sys.stderr.write(f"cimnas show: {p}\n")
    return 0
