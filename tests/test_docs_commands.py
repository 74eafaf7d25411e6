"""Every `cimnas ...` command in README.md and docs/*.md parses as written (argparse only, nothing runs), and the
ones that finish in seconds run (issue 24 point 13). Synopsis lines (with [optional] parts, A|B alternatives or
`...`) are skipped: they describe, they are not commands to paste."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cimnas.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: commands cheap enough to run here (no training, no dataset download): first words after `cimnas`
FAST = ("presets", "models", "datasets", "energy")


def _placeholder(token: str) -> bool:
    """OUT, CONFIG, K, RUN_DIR, $C: a word the reader replaces."""
    return "$" in token or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*(=[A-Z0-9_]+)?|[a-z_.]+=[A-Z]", token))


def _commands() -> list[tuple[str, str]]:
    """(page, command) for every complete `cimnas ...` command: lines of code blocks, and inline code with options."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [(ln, True) for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
        inline = re.findall(r"`(cimnas [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        lines += [(" ".join(x.split()), False) for x in inline]
        for line, in_block in lines:
            for part in re.split(r";|&&", line.split(" #")[0]):
                part = re.sub(r"^(\$ |[A-Z_]+=\S+ )+", "", part.strip())
                if not part.startswith("cimnas ") or re.search(r"[\[\]|<>]|\.\.\.| / ", part):
                    continue
                tokens = shlex.split(part)
                if any(_placeholder(t) for t in tokens):
                    continue  # a synopsis: the reader fills in the words
                complete = any(t.startswith("-") for t in tokens) or \
                    tokens[1:] in (["presets"], ["models"], ["datasets"])
                if not in_block and not complete:
                    continue  # a command named in prose (`cimnas train`), not one to paste
                found.append((page.name, part))
    return found


COMMANDS = _commands()


def test_docs_have_commands():
    assert len(COMMANDS) >= 20, COMMANDS


@pytest.mark.parametrize("page, line", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_command_parses(page, line):
    argv = shlex.split(line)[1:]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    assert not extra or getattr(args, "passthrough", False), f"{page}: `{line}` has unknown options {extra}"


FAST_COMMANDS = [(p, c) for p, c in COMMANDS if shlex.split(c)[1] in FAST and "--checkpoint" not in c
                 and "--arch" not in c and "--dataset" not in c and "--spec " not in c]


@pytest.mark.parametrize("page, line", FAST_COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in FAST_COMMANDS])
def test_fast_command_runs(page, line, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(shlex.split(line)[1:]) == 0, f"{page}: `{line}`: {capsys.readouterr().err}"


def test_checkpoint_paths_are_where_training_writes_them():
    """A page that trains into `--out runs/X` and then reads `runs/X/...` names the file training writes."""
    for page in PAGES:
        cmds = [shlex.split(c) for p, c in COMMANDS if p == page.name]
        outs = [c[c.index("--out") + 1] for c in cmds if c[1] == "train" and "--out" in c]
        for c in cmds:
            for i, t in enumerate(c[:-1]):
                if t == "--checkpoint":
                    path = c[i + 1]
                    for out in outs:
                        if path.startswith(out + "/"):
                            assert path == f"{out}/checkpoints/checkpoint.pt", f"{page.name}: {path}"


def test_docs_cite_no_file_outside_the_repository():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for bad in ("REFERENCE-FACTS", "../shared/", "shared/papers"):  # the project's notes, not in the repository
            assert bad not in text, f"{page.name} cites {bad}, which a reader of the repository does not have"
