"""`cimnas uae ...`: the shared parent of the UAE sub-commands (analysis and search).

`analyze` / `table1` come from cimnas.commands.uae_analyze; `search` and friends from
cimnas.commands.uae_search when that module is present.
"""

from __future__ import annotations

import importlib


def register(subparsers) -> None:
    parser = subparsers.add_parser("uae", help="UAE: device-uncertainty analysis and uncertainty-aware search")
    sub = parser.add_subparsers(dest="uae_command", metavar="UAE_COMMAND", parser_class=type(parser))
    sub.required = True
    from cimnas.commands.uae_analyze import register_analyze

    register_analyze(sub)
    try:
        search = importlib.import_module("cimnas.commands.uae_search")
    except ModuleNotFoundError as e:
        if e.name != "cimnas.commands.uae_search":
            raise
        return
    search.register_search(sub)
