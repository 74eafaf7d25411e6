"""`cimnas <command>`: each module in `cimnas.commands` contributes its sub-commands.

A command module defines `register(subparsers)` which adds parsers and sets `func` on them
(`parser.set_defaults(func=handler)`); a handler takes the parsed args and returns an exit code.
`CimnasError` (bad user input) becomes one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import textwrap
import threading
from collections.abc import Callable

from cimnas.errors import CimnasError

DESCRIPTION = """Hardware-aware (HAWIS) and uncertainty-aware (UAE) neural architecture search for ReRAM
compute-in-memory accelerators: train binarized or quantized networks, cost them on crossbars (energy,
latency, area), test them under device defects, and search their widths or layers."""
EPILOG = """first steps:
  cimnas energy --model resnet20 --width-mult 2     energy of a network on ReRAM crossbars, per layer
  cimnas train --config configs/train/digits_binary.yaml --out runs/b   train a fully binarized ResNet-20
  cimnas energy --checkpoint runs/b                 energy of the model you trained
  cimnas robustness --checkpoint runs/b/checkpoints/checkpoint.pt --sa1-rate 0.05   accuracy under defects
  cimnas hawis run --config configs/hawis/demo.yaml --out runs/demo    the HAWIS search (make demo)
`cimnas COMMAND -h` explains a command; README.md and docs/ explain the rest."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default shown; descriptions and epilogs printed as written."""


def doc_summary(doc: str | None) -> str:
    """The first paragraph of a module docstring as one line (a study driver's description)."""
    return textwrap.fill(" ".join((doc or "").strip().split("\n\n")[0].split()), 100)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose own errors (unknown choice, missing or mistyped argument) are one line on stderr, exit 2:
    `cimnas: error: ...` for `cimnas`, `error: ...` for the study drivers (`python -m cimnas.pipelines.studies.*`,
    whose CimnasErrors read the same)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        prefix = "cimnas: error" if self.prog.startswith("cimnas") else "error"
        sys.stderr.write(f"{prefix}: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    import cimnas.commands as commands

    parser = OneLineParser(prog="cimnas", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"cimnas.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def guarded(fn: Callable[[], int | None], *, error: str = "cimnas: error:",
            interrupted: str = "cimnas: interrupted; finished work is saved, re-run with --resume to continue",
            exiting: bool = False) -> int:
    """Run `fn` as a command: its exit code; bad input (`CimnasError`) is one line after `error` and exit 2, Ctrl-C
    the one line `interrupted` and exit 130, neither a traceback (`cimnas` and the study drivers). `exiting`: the
    process ends after this (a `main()` run from the command line, argv None): after a Ctrl-C, further SIGINTs are
    then ignored to the end, so none interrupts the shutdown (atexit callbacks) into a traceback."""
    try:
        return int(fn() or 0)
    except CimnasError as e:
        sys.stderr.write(f"{error} {e}\n")
        return 2
    except KeyboardInterrupt:
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None  # a 2nd, 3rd Ctrl-C
        sys.stderr.write(f"{interrupted}\n")
        if previous is not None and not exiting:  # an in-process caller (a test) gets its handler back
            signal.signal(signal.SIGINT, previous)
        return 130


#: the study drivers' Ctrl-C line (`python -m cimnas.pipelines.studies.*`: each resumes with the same command)
STUDY_INTERRUPTED = "error: interrupted; finished work is saved, run the same command again to continue"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):  # only `cimnas study NAME ...` hands options on
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return guarded(lambda: args.func(args), exiting=argv is None)


if __name__ == "__main__":
    sys.exit(main())
