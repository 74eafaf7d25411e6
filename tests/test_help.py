"""Help that speaks to users (issue 24 point 12): `cimnas --help` describes the tool, every option of every command
(the study drivers' too) has help with its default shown, descriptions print as written, the study drivers are
`cimnas study NAME` sub-commands."""

from __future__ import annotations

import argparse

import pytest

from cimnas import cli
from cimnas.cli import build_parser, main
from cimnas.commands.study import STUDIES


def _walk(parser: argparse.ArgumentParser, path: list[str]):
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _walk(sub, [*path, name])


def _driver_parser(module: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a study driver builds (captured at its parse_args, which then stops it)."""
    import importlib

    seen = []

    def capture(self, *a, **k):
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(cli.OneLineParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        importlib.import_module(module).main([], prog="x")
    return seen[0]


def _missing_help(parser):
    return [f"{' '.join(path)} {a.dest}" for path, p in _walk(parser, ["cimnas"]) for a in p._actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not a.help]


def test_every_option_has_help(monkeypatch):
    assert _missing_help(build_parser()) == []
    for name, (module, _text) in STUDIES.items():
        assert _missing_help(_driver_parser(module, monkeypatch)) == [], name


def test_top_help_speaks_to_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "compute-in-memory" in out and "first steps" in out and "cimnas.commands" not in out


def test_defaults_shown_and_percent_printed(capsys):
    with pytest.raises(SystemExit):
        main(["robustness", "-h"])
    assert "(default: 10)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["hawis", "rank-check", "-h"])
    out = capsys.readouterr().out
    assert "95 % intervals" in " ".join(out.split()) and "%%" not in out


@pytest.mark.parametrize("name", list(STUDIES))
def test_study_subcommands_reach_their_driver(name, capsys):
    with pytest.raises(SystemExit) as e:
        main(["study", name, "-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cimnas study {name}")


def test_unknown_option_still_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["energy", "--no-such-option"])
    assert e.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
