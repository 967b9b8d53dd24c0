"""The README's "Your first network in five commands", run line by line as a person types them.

The commands are read from the README itself (the ```sh block of that section), so the README
cannot drift from what works. Each runs in bash with the journey wrapper first on PATH, in a fresh
HOME (so `stoq init` writes ~/.stoq/certs and the nodes keep their stores in ~/.stoq/NAME).
A line ending in `&` is a node: it is started in the background and waited for until it prints
`ready`. The README's ports (4433, 4434) are replaced with free ones (a node that relies on the
default [::1]:4433 gets `--listen` with the free one), so a node left on the machine cannot collide
with the test. The rest run in one shell, as typed, so `$ID` carries over.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from conftest import README, Proc, Procs, clean_env, run

SECTION = "## Your first network in five commands"


def walkthrough_lines() -> list[str]:
    text = README.read_text()
    assert SECTION in text, f"the README lost its section {SECTION!r}"
    body = text.split(SECTION, 1)[1]
    m = re.search(r"```sh\n(.*?)```", body, re.S)
    assert m, "the walkthrough section has no ```sh block"
    return [line.strip() for line in m.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def test_readme_walkthrough_five_commands(stoq: str, tmp_path: Path, procs: Procs) -> None:
    lines = walkthrough_lines()
    assert len(lines) == 5, f"the walkthrough promises five commands, the README shows {len(lines)}: {lines}"
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(home)
    env["PATH"] = str(Path(stoq).parent) + os.pathsep + env.get("PATH", "")
    ports = {"4433": str(free_udp_port()), "4434": str(free_udp_port())}
    photo = work / "photo.jpg"
    photo.write_bytes(os.urandom(3_000_000))

    def localise(line: str) -> str:
        for old, new in ports.items():
            line = line.replace(f"]:{old}", f"]:{new}")
        # A node that relies on the default address ([::1]:4433) is given the free port instead.
        if line.startswith("stoq node") and "--listen" not in line:
            line = line.rstrip("&").rstrip() + f" --listen '[::1]:{ports['4433']}' &"
        return line

    pending: list[str] = []
    for i, line in enumerate(lines):
        line = localise(line)
        if line.endswith("&"):
            assert not pending, "the walkthrough's foreground lines before a node are run first"
            p = procs.add(Proc(f"walkthrough-{i}", ["bash", "-c", f"cd {work} && exec {line[:-1].strip()}"], env, tmp_path))
            p.wait_line(r"^ready ", timeout=60)
        elif not any(l.endswith("&") for l in lines[i + 1:]):
            pending.append(line)
        else:
            r = run(["bash", "-c", f"set -e; cd {work}; {line}"], env, timeout=120)
            assert r.rc == 0, f"{line}\nexit {r.rc}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    script = "set -e\ncd " + str(work) + "\n" + "\n".join(pending) + "\nprintf '%s' \"$ID\" > id.txt\n"
    r = run(["bash", "-c", script], env, timeout=180)
    assert r.rc == 0, f"{script}\nexit {r.rc}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    # `ID=$(stoq put …)` captured the content id and nothing else.
    content_id = (work / "id.txt").read_text()
    assert re.fullmatch(r"stoq:[a-z2-7]{52}", content_id), f"ID captured {content_id!r}, not one content id"
    assert (work / "copy.jpg").read_bytes() == photo.read_bytes()
    # What the walkthrough says it made.
    certs = home / ".stoq" / "certs"
    for name in ("ca.pem", "origin.pem", "edge.pem", "client.pem"):
        assert (certs / name).exists(), f"stoq init did not write {certs / name}"
    assert (home / ".stoq" / "origin").is_dir() and (home / ".stoq" / "edge").is_dir()
