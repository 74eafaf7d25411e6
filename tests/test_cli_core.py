"""The CLI shell: sub-command discovery and one-line errors with exit code 2."""

import pytest

from cimnas.cli import build_parser, main
from cimnas.errors import CimnasError


def test_unknown_command_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cimnas: error:") and "\n" not in err


def test_cimnas_error_becomes_exit_2(monkeypatch, capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")

    def handler(args):
        raise CimnasError("bad thing; do the other thing")

    p = sub.add_parser("boom-test")
    p.set_defaults(func=handler)
    monkeypatch.setattr("cimnas.cli.build_parser", lambda: parser)
    assert main(["boom-test"]) == 2
    assert capsys.readouterr().err == "cimnas: error: bad thing; do the other thing\n"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "COMMAND" in capsys.readouterr().out


def test_python_dash_m_cimnas_runs_the_cli():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "cimnas", "nosuchcommand"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        for sub in (getattr(action, "choices", None) or {}).values() if hasattr(action, "_name_parser_map") else ():
            yield from _all_parsers(sub)


def test_every_help_text_formats():
    """`--help` of every command and sub-command renders (a bare '%' in a help string made `cimnas hawis --help`
    raise a TypeError traceback)."""
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) >= 15  # the walk really reached the sub-commands
    for p in parsers:
        assert p.prog in p.format_help()


@pytest.mark.parametrize("module", ["headroom", "hawis_study", "uae_study"])
def test_study_driver_help(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"cimnas.pipelines.studies.{module}").main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
