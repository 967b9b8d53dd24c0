"""docs/OPERATIONS.md names only commands and flags that exist.

Every `stoq …` command in the guide (in code blocks, and in inline code) is checked against the
release binary's `--help`: the subcommand path must exist, and every `--flag` written after it
must be one that subcommand takes. The binary is $STOQ_BIN, else .build/release/stoq (the
`make test` deploy step runs after the build); without one the test is skipped.

It also checks that the guide's links into the repository resolve, and that the node
configuration keys it names are keys `stoq node --config` reads.
"""
from __future__ import annotations

import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "OPERATIONS.md"


def stoq_binary() -> Path | None:
    candidate = os.environ.get("STOQ_BIN") or str(ROOT / ".build" / "release" / "stoq")
    path = Path(candidate)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def commands() -> list[str]:
    """The `stoq …` command lines of the guide, continuation lines joined."""
    text = doc_text()
    found: list[str] = []
    in_block = False
    pending = ""
    old_table = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_block = not in_block
            pending = ""
            continue
        if in_block:
            line = (pending + " " + line.strip()) if pending else line
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1]
                continue
            pending = ""
            line = line.split(" #", 1)[0]
            for m in re.finditer(r"(?:^|[\s/])stoq\s+([a-z][^\n]*)", line):
                before = line[: m.start()].split()
                if before and re.fullmatch(r"-[a-zA-Z]", before[-1]):
                    continue  # `kubectl -n stoq …`, `runuser -u stoq …`: a value, not the command
                found.append("stoq " + m.group(1).strip())
        else:
            # The table of old spellings (hidden aliases kept for one release): only its "new"
            # column must name what `--help` shows.
            if "old spellings still work" in line:
                old_table = True
            elif old_table and line.startswith("#"):
                old_table = False
            if old_table and line.startswith("|"):
                line = line.rstrip().rstrip("|").rsplit("|", 1)[-1]
            for span in re.findall(r"`([^`]+)`", line):
                span = span.replace("\\|", "|")
                if re.match(r"stoq\s+[a-z]", span):
                    found.append(span)
    return found


@lru_cache(maxsize=None)
def help_text(path: tuple[str, ...]) -> str | None:
    """The help of `stoq PATH`, or None when PATH is not a subcommand."""
    binary = stoq_binary()
    assert binary is not None
    p = subprocess.run([str(binary), *path, "--help"], capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    usage = re.search(r"USAGE:\s*stoq\s+([^\n]*)", out)
    if not usage:
        return None
    words = usage.group(1).split()
    # ArgumentParser prints the root's help for an unknown subcommand.
    if words[: len(path)] != list(path):
        return None
    return out


def split_command(command: str) -> tuple[tuple[str, ...], list[str]]:
    """The longest subcommand path of `command` and the flags written after it."""
    tokens = command.split()[1:]
    path: list[str] = []
    for token in tokens:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", token):
            break
        if help_text(tuple(path + [token])) is None:
            break
        path.append(token)
    flags = [t.split("=", 1)[0] for t in tokens if t.startswith("--") and len(t) > 2]
    flags = [re.sub(r"[^a-z0-9-]+$", "", f) for f in flags]
    return tuple(path), flags


def test_the_guide_names_commands():
    assert len(commands()) >= 40, commands()


def test_every_command_and_flag_exists():
    if stoq_binary() is None:
        pytest.skip("no stoq binary (set STOQ_BIN or build .build/release/stoq)")
    problems: list[str] = []
    for command in commands():
        path, flags = split_command(command)
        if not path:
            problems.append(f"{command!r}: no such subcommand")
            continue
        text = help_text(path) or ""
        for flag in flags:
            if flag == "--help":
                continue
            if not re.search(re.escape(flag) + r"(?![a-z0-9-])", text):
                problems.append(f"{command!r}: `stoq {' '.join(path)}` takes no {flag}")
    assert not problems, "docs/OPERATIONS.md:\n" + "\n".join(sorted(set(problems)))


def test_links_resolve():
    missing = []
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc_text()):
        if target.startswith("http"):
            continue
        if not (DOC.parent / target).exists():
            missing.append(target)
    assert not missing, missing


def test_deploy_files_named_exist():
    missing = [p for p in sorted(set(re.findall(r"`(deploy/[^`\s]+)`", doc_text())))
               if not re.search(r"[*A-Z]", p) and not (ROOT / p).exists()]
    assert not missing, missing


def test_configuration_keys_named_exist():
    """Every `key` the guide calls a config key is a key of docs/CONFIG.md's table."""
    config_doc = (ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    keys = set(re.findall(r"^\| `(\w+)` \|", config_doc, re.M))
    named = set(re.findall(r"config(?:uration)? key `(\w+)`", doc_text()))
    named |= set(re.findall(r"\(config `(\w+)`", doc_text()))
    unknown = sorted(k for k in named if k not in keys)
    assert named, "the guide names no configuration key"
    assert not unknown, unknown
