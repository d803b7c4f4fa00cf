"""Every `runstream ...` command the docs show parses as written.

The README, docs/*.md and the packages' READMEs are read for `runstream <subcommand>`
in inline code and code blocks; placeholders (`<sid>`, `OWNER`, `$MID`, `PORT`, ...)
become sample values, `[optional parts]` are kept, `a\\|b\\|c` gives one command each;
then each command line goes through the real command's parser (types, choices, required
arguments, unknown flags), as `runstream` would parse it before running it. The commands
themselves run against real stacks in tests/integration (up, follow, status, cleanup)
and services/cli/tests.
"""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path

import pytest
import typer.main

from runstream.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("services/*/README.md"),
               *ROOT.glob("libs/*/README.md")])
SAMPLE_ID = str(uuid.UUID(int=0x01A22F2C776D7D70BF53017134526BEA))
PLACEHOLDERS = {
    "PORT": "8000", "URL": "postgresql://postgres@127.0.0.1:5432/runstream", "DIR": ".runstream",
    "SECONDS": "90", "DURATION": "1h", "N": "5", "SEQ": "0", "OWNER": "alice", "NAME": "alice",
    "TOKEN": "t0ken", "ID": SAMPLE_ID, "MESSAGE_ID": SAMPLE_ID, "SESSION_ID": SAMPLE_ID,
}
_FENCE = re.compile(r"^```.*?\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
# at the start of a line or a span, after a shell prompt, inside `$(`, or as a path's end
_COMMAND = re.compile(r"(?:^\s*(?:\$\s+)?|\$\(|/)runstream\s+([a-z].*)")


def _block_lines(block: str) -> list[str]:
    """A code block's lines, a command's continuation lines (indented, or after a `\\`)
    joined to it."""
    lines: list[str] = []
    for line in block.splitlines():
        if lines and (lines[-1].endswith("\\") or (line[:1].isspace() and line.strip())):
            lines[-1] = lines[-1].rstrip("\\") + " " + line.strip()
        else:
            lines.append(line)
    return lines


def _spans(text: str) -> list[str]:
    blocks = _FENCE.findall(text)
    rest = _FENCE.sub("", text)
    lines = [line for block in blocks for line in _block_lines(block)]
    return lines + _INLINE.findall(rest)


def _command_lines(text: str) -> list[str]:
    found = []
    for span in _spans(text):
        match = _COMMAND.search(span)
        if match is None:
            continue
        line = match.group(1)
        line = re.split(r"\)|\s#\s|\s#$|;|&&|\s\|\s", line)[0]  # $( ... ), comments, pipes
        found.append(line.strip())
    return found


def _argv(line: str) -> list[list[str]]:
    line = re.sub(r"\[([^\[\]]*)\]", r"\1", line)  # keep optional parts
    line = line.replace("...", " ").replace("…", " ")
    variants = [line]
    alternatives = re.search(r"(\S+\\\|\S+)", line)
    if alternatives:
        variants = [line.replace(alternatives.group(1), choice)
                    for choice in alternatives.group(1).split("\\|")]
    commands = []
    for variant in variants:
        argv = []
        for word in shlex.split(variant):
            if re.fullmatch(r"<[^>]+>", word):
                word = "alice" if "owner" in word else SAMPLE_ID
            elif word.startswith("$"):
                word = SAMPLE_ID
            word = PLACEHOLDERS.get(word, word)
            argv.append(word)
        commands.append(argv)
    return commands


def _documented() -> list[tuple[str, list[str]]]:
    seen: dict[str, tuple[str, list[str]]] = {}
    for path in DOCS:
        for line in _command_lines(path.read_text(encoding="utf-8")):
            for argv in _argv(line):
                seen.setdefault(" ".join(argv), (f"{path.relative_to(ROOT)}: runstream {line}",
                                                 argv))
    return list(seen.values())


def _parse(argv: list[str]) -> None:
    """What `runstream` does with argv before it runs anything: parse each level."""
    command = typer.main.get_command(app)
    ctx = command.make_context("runstream", list(argv))
    while hasattr(command, "resolve_command"):
        args = [*ctx._protected_args, *ctx.args]  # type: ignore[attr-defined]
        name, command, rest = command.resolve_command(ctx, args)
        ctx = command.make_context(name, rest, parent=ctx)


DOCUMENTED = _documented()


def test_the_docs_show_the_operator_commands() -> None:
    shown = {argv[0] for _, argv in DOCUMENTED}
    assert {"up", "token", "status", "failed", "cleanup", "rebuild", "tail", "follow",
            "gateway", "projector", "worker"} <= shown


@pytest.mark.parametrize(("where", "argv"), DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_each_documented_command_parses(where: str, argv: list[str]) -> None:
    if "--help" in argv:
        argv = [a for a in argv if a != "--help"]  # would print the help and exit 0
        if argv == ["up"]:
            return _parse(argv)
    _parse(argv)


def test_a_wrong_command_does_not_parse() -> None:
    """The test above can fail: the old `token --sub` spelling is kept, but not a typo."""
    from typer._click.exceptions import UsageError

    for argv in (["token", "alice", "--tll", "1h"], ["up", "--http-port", "PORT"],
                 ["worker", "planner"], ["follow"]):
        with pytest.raises(UsageError):
            _parse(argv)
