"""Fails when a command of the README's command table is exercised by no journey.

Every command line the journeys ran went through the logging wrapper (conftest `stoq`). Each
usage in the first column of the README table (every `stoq …` code span, and spans such as
`block get ID -o FILE` that continue the row's command) must be matched by a recorded command
line: the same subcommand words, and every flag the usage shows outside [optional brackets]
(with its value when the README spells a literal one, as in `--role storage`).

This test runs last (conftest orders it) and only means something after the whole suite ran:
`make journeys-test`, or `pytest Tests/Journeys`. `make journeys-test` runs the journeys in
parallel (pytest-xdist) with one shared log (`STOQ_ARGV_LOG`), then this test on its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import README, real_stoq, recorded_commands

WORD = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Usage:
    text: str                              # as written in the README
    path: tuple[str, ...]                  # subcommand words, e.g. ("block", "put")
    flags: tuple[tuple[str, str | None], ...]  # required flags, with a literal value or None


def table_rows(readme: str) -> list[str]:
    section = readme.split("## Command line", 1)[1]
    section = section.split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def strip_optional(text: str) -> str:
    """The usage without quoted strings and without [optional] parts (innermost first)."""
    text = re.sub(r"'[^']*'", "Q", text)
    while True:
        stripped = re.sub(r"\[[^\[\]]*\]", " ", text)
        if stripped == text:
            return text
        text = stripped


def parse_usage(span: str, context: str | None) -> Usage | None:
    words = span.split()
    if words and words[0] == "stoq":
        words = words[1:]
    elif not (context and words and words[0] == context):
        return None  # not a command (e.g. `name:NAME`)
    path: list[str] = []
    for w in words:
        if not WORD.match(w):
            break
        path.append(w)
    if not path:
        return None
    required = strip_optional(" ".join(words[len(path):])).split()
    flags = []
    for i, w in enumerate(required):
        if re.match(r"^--?[a-z][a-z0-9-]*$", w):
            value = required[i + 1] if i + 1 < len(required) else None
            literal = value if value is not None and re.match(r"^[a-z][a-z0-9-]*$", value) else None
            flags.append((w, literal))
    return Usage(span, tuple(path), tuple(flags))


def readme_usages(readme: str) -> list[Usage]:
    usages: list[Usage] = []
    for row in table_rows(readme):
        cells = re.split(r"(?<!\\)\|", row)
        first = cells[1].replace("\\|", "|")
        context = None
        for span in re.findall(r"`([^`]+)`", first):
            usage = parse_usage(span, context)
            if usage is None:
                continue
            context = usage.path[0] if span.startswith("stoq ") else context
            usages.append(usage)
    return usages


def covers(argv: list[str], usage: Usage) -> bool:
    if tuple(argv[:len(usage.path)]) != usage.path:
        return False
    rest = argv[len(usage.path):]
    for flag, value in usage.flags:
        aliases = {flag, {"-o": "--output"}.get(flag, flag)}
        positions = [i for i, a in enumerate(rest) if a in aliases or any(a.startswith(f + "=") for f in aliases)]
        if not positions:
            return False
        if value is not None and not any(i + 1 < len(rest) and rest[i + 1] == value for i in positions):
            return False
    return True


def test_readme_table_parses() -> None:
    usages = readme_usages(README.read_text())
    paths = {u.path for u in usages}
    # A sanity check of the parser against rows that must be there.
    for must in [("certs", "init-ca"), ("get",), ("node",), ("block", "get"), ("bench", "routing"), ("bench", "relay")]:
        assert must in paths, f"parsed {sorted(paths)}"
    storage = [u for u in usages if u.path == ("node",) and ("--role", "storage") in u.flags]
    assert storage, [u for u in usages if u.path == ("node",)]


def test_every_readme_command_is_exercised(argv_log: Path) -> None:
    if real_stoq() is None:
        pytest.skip("STOQ_BIN is not set: no journey ran")
    if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("STOQ_ARGV_LOG"):
        pytest.skip("under pytest-xdist a worker sees only its own journeys: run this test alone afterwards, "
                    "with STOQ_ARGV_LOG shared by all of them (make journeys-test does)")
    commands = recorded_commands(argv_log)
    assert commands, "no journey ran stoq (run the whole suite: pytest Tests/Journeys)"
    missing = [u for u in readme_usages(README.read_text()) if not any(covers(c, u) for c in commands)]
    assert not missing, "README commands no journey exercised:\n" + "\n".join(
        f"  `{u.text}` (needs: stoq {' '.join(u.path)} {' '.join(f + (' ' + v if v else '') for f, v in u.flags)})"
        for u in missing)
