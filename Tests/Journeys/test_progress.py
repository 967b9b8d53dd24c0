"""Progress a person can read (issue 14 §4), checked the way a terminal user sees it.

`stoq get` (from an origin and an edge started here) and `stoq put` run inside tmux
(`tmux new-session -d -x 120 -y 30`); `capture-pane -p` is polled while they run. The bar must
appear within a second of the start (a status line says what happens before bytes flow), show
bytes done and total, the rate, the ETA and, for a network fetch, the number of live sources; a
note printed during the transfer (the edge is killed mid-fetch) must sit above an intact bar.
Without a terminal a plain progress line is printed every 2 s and one at the end; with `--quiet`
stderr stays empty on success. The tmux part is skipped cleanly when tmux cannot run.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Procs, User, content_id

SIZE = 12_000_000
# Each node serves at most this many bytes/s, so a fetch lasts long enough to watch (1.5 to 3 s).
SERVE_RATE = "4000000"
# A peer that does not answer (nothing listens there): its dial would take the 10 s handshake
# timeout. The fetch must not wait for it before the bar shows bytes.
DEAD_PEER = "[::1]:9"

# `get [#####...............]  26.3 %  3.0/11.4 MiB  4.1 MiB/s  ETA 2.0s  2 sources`
BAR = re.compile(
    r"^(?P<verb>get|put|write|upload|block put|block get) \[[#.]{20}\]\s+(?P<pct>\d+\.\d) %\s+"
    r"(?P<done>[\d.]+)/(?P<total>[\d.]+) (?P<unit>B|KiB|MiB|GiB)\s+"
    r"(?P<rate>--|[\d.]+ (?:B|KiB|MiB|GiB)) ?(?:MiB)?/s\s+(?:ETA (?P<eta>\S+)|in (?P<took>\S+))"
    r"(?:\s+(?P<sources>\d+) sources?)?\s*$")
# The same line without a terminal: `stoq: get  26.3 %  3.0/11.4 MiB  4.1 MiB/s  ETA 2.0s  2 sources`
LINE = re.compile(r"^stoq: (get|put|write|upload) \s*\d+\.\d %\s+[\d.]+/[\d.]+ (B|KiB|MiB|GiB)\s+.*/s\s+(ETA|in) \S+")


@pytest.fixture(scope="module")
def network(user: User, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An origin holding a 12 MB file and an edge in front of it (which fills from the origin),
    each serving at most 4 MB/s."""
    work = tmp_path_factory.mktemp("progress")
    big = work / "big.bin"
    big.write_bytes(random.Random(14).randbytes(SIZE))
    store = work / "stores" / "pg-origin"
    cid = content_id(user.ok("put", big, "--store", store, "--quiet").stdout)
    procs = Procs()
    try:
        origin = user.node(procs, "pg-origin", "--role", "origin", "--serve-rate", SERVE_RATE, store=store)
        edge = user.node(procs, "pg-edge", "--role", "edge", "--upstream", origin.address, "--serve-rate", SERVE_RATE)
        yield {"work": work, "big": big, "cid": cid, "origin": origin, "edge": edge, "key": store / "publisher.key",
               "procs": procs}
    finally:
        procs.stop_all()


def get_args(user: User, net: dict, out: Path, store: Path, peers: str) -> list[str]:
    return ["get", net["cid"], "-o", str(out), "--peers", peers, "--store", str(store), "--publisher-key", str(net["key"]),
            *user.tls("pg-reader")]


# --------------------------------------------------------------------------- tmux


class Pane:
    """One command in a private tmux server (its own socket, so nothing else's server or
    environment is used), 120 x 30."""

    def __init__(self, user: User, argv: list[str], work: Path, name: str) -> None:
        self.socket = f"stoq-progress-{os.getpid()}-{name}"
        self.done = work / f"{name}.rc"
        script = work / f"{name}.sh"
        script.write_text(
            "#!/bin/sh\n"
            f"{shlex.join([user.stoq, *argv])} >{shlex.quote(str(work / (name + '.out')))}\n"
            f"echo $? >{shlex.quote(str(self.done))}\n"
            "sleep 120\n")
        script.chmod(0o755)
        env = dict(user.env)
        env["TERM"] = "xterm-256color"
        self.started = time.monotonic()
        subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "30",
                        str(script)], env=env, check=True, timeout=10)

    def capture(self) -> list[str]:
        r = subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p"], capture_output=True, text=True, timeout=10)
        return [line.rstrip() for line in r.stdout.splitlines()]

    def rc(self) -> int | None:
        try:
            return int(self.done.read_text().strip())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        kill_server(self.socket)


def kill_server(socket: str) -> None:
    """Stops a private tmux server and removes its socket file (kill-server leaves it)."""
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)
    path = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / socket
    try:
        path.unlink()
    except OSError:
        pass


def tmux_works(tmp: Path) -> bool:
    if shutil.which("tmux") is None:
        return False
    socket = f"stoq-progress-probe-{os.getpid()}"
    try:
        r = subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-x", "40", "-y", "5", "sleep 5"],
                           capture_output=True, timeout=10)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        kill_server(socket)


def bars(lines: list[str]) -> list[re.Match[str]]:
    return [m for m in (BAR.match(line) for line in lines) if m]


def test_get_in_a_terminal(user: User, network: dict, tmp_path: Path) -> None:
    if not tmux_works(tmp_path):
        pytest.skip("tmux cannot start here (install it: scripts/bootstrap.sh)")
    net = network
    out = tmp_path / "got.bin"
    peers = f"{net['edge'].address},{net['origin'].address},{DEAD_PEER}"
    pane = Pane(user, get_args(user, net, out, tmp_path / "store", peers), tmp_path, "get")
    try:
        first_text: float | None = None
        first_bar: re.Match[str] | None = None
        first_bar_at: float | None = None
        killed_at_bar: str | None = None
        after_kill: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = pane.capture()
            now = time.monotonic() - pane.started
            text = [line for line in lines if line]
            if text and first_text is None:
                first_text = now
            found = [m for m in bars(text) if m.group("verb") == "get"]
            if found and first_bar is None:
                first_bar, first_bar_at = found[-1], now
            # Mid-transfer (a bar with a rate and an ETA below 60 %): kill the edge; the fetch
            # carries on from the origin, and the notes about the lost source print above the bar.
            if (killed_at_bar is None and found and found[-1].group("rate") != "--" and found[-1].group("eta") not in (None, "--")
                    and 5 < float(found[-1].group("pct")) < 60):
                killed_at_bar = found[-1].group(0)
                net["edge"].proc.signal(signal.SIGKILL)
            if killed_at_bar is not None and any(line.startswith("stoq: source") for line in text):
                after_kill = text
            if pane.rc() is not None:
                break
            time.sleep(0.02)
        final = [line for line in pane.capture() if line]
        assert pane.rc() == 0, f"stoq get failed (exit {pane.rc()}); screen:\n" + "\n".join(final)
        assert first_text is not None and first_text < 1.0, f"nothing on screen for {first_text} s"
        assert first_bar is not None, "no progress bar seen; screen:\n" + "\n".join(final)
        # Not after the dead peer's 10 s handshake timeout: the others answered, it was left out.
        assert first_bar_at is not None and first_bar_at < 5, f"the bar appeared after {first_bar_at:.1f} s"
        assert any(line.startswith(f"stoq: skipping {DEAD_PEER}") for line in final), "\n".join(final)
        assert killed_at_bar is not None, "never saw the bar mid-transfer; screen:\n" + "\n".join(final)
        m = BAR.match(killed_at_bar)
        assert m and m.group("total") and m.group("rate") != "--" and m.group("eta") not in (None, "--"), killed_at_bar
        assert m.group("sources") == "2", f"two live sources expected while both serve: {killed_at_bar}"
        # The note sits on its own line above the bar, and the bar below it is whole.
        assert after_kill, "no note about the killed source appeared during the fetch; screen:\n" + "\n".join(final)
        for line in after_kill:
            if "stoq:" in line:
                assert line.startswith("stoq:") and not re.search(r"\[[#.]{5,}", line), f"a note broke the bar: {line!r}"
        # The final state stays on screen: 100 %, total, the mean rate and the time it took.
        done = [m for m in bars(final) if m.group("verb") == "get"]
        assert done and done[-1].group("pct") == "100.0" and done[-1].group("took"), "\n".join(final)
        assert out.stat().st_size == SIZE
    finally:
        pane.close()
        # The edge was killed; start it again for the next tests is not needed (they use the origin).


def test_put_in_a_terminal(user: User, network: dict, tmp_path: Path) -> None:
    if not tmux_works(tmp_path):
        pytest.skip("tmux cannot start here (install it: scripts/bootstrap.sh)")
    pane = Pane(user, ["put", str(network["big"]), "--store", str(tmp_path / "put-store")], tmp_path, "put")
    try:
        first_text: float | None = None
        seen: list[re.Match[str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = [line for line in pane.capture() if line]
            if lines and first_text is None:
                first_text = time.monotonic() - pane.started
            seen += [m for m in bars(lines) if m.group("verb") == "put"]
            if pane.rc() is not None:
                break
            time.sleep(0.02)
        final = [line for line in pane.capture() if line]
        assert pane.rc() == 0, "\n".join(final)
        assert first_text is not None and first_text < 1.0, f"nothing on screen for {first_text} s"
        assert seen, "no put progress bar; screen:\n" + "\n".join(final)
        last = seen[-1]
        assert last.group("pct") == "100.0" and last.group("total") == "11.4" and last.group("unit") == "MiB", last.group(0)
        # No raw byte counts, one per line, as before.
        assert not any(re.fullmatch(r"(progress )?\d+", line) for line in final), "\n".join(final)
        # The id went to stdout, not into the bar.
        content_id((tmp_path / "put.out").read_text())
    finally:
        pane.close()


# --------------------------------------------------------------------------- without a terminal


def test_without_a_terminal_and_quiet(user: User, network: dict, tmp_path: Path) -> None:
    net = network
    origin = net["origin"].address
    r = user.ok(*get_args(user, net, tmp_path / "a.bin", tmp_path / "store-a", origin))
    lines = [line for line in r.stderr.splitlines() if LINE.match(line)]
    assert lines, f"no progress line without a terminal: {r.stderr[-2000:]}"
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr, "terminal control codes on a stderr that is no terminal"
    fetch_lines = [line for line in lines if line.startswith("stoq: get")]
    assert fetch_lines and re.search(r"100\.0 %.* in \S+\s+\d+ sources?$", fetch_lines[-1]), lines
    # A line every 2 s: the fetch (12 MB at 4 MB/s) printed one before its last.
    assert r.seconds > 2.5 and len(fetch_lines) >= 2, f"{r.seconds:.1f} s fetch printed only {fetch_lines}"

    small = tmp_path / "small.bin"
    small.write_bytes(random.Random(15).randbytes(3_000_000))
    put = user.ok("put", small, "--store", tmp_path / "put-store")
    put_lines = [line for line in put.stderr.splitlines() if line.startswith("stoq: put ") and "%" in line]
    assert put_lines and "100.0 %" in put_lines[-1], put.stderr[-2000:]
    assert not re.search(r"^progress \d+$", put.stderr, re.M), "put printed raw byte counts"

    # --quiet: nothing on stderr on success (no progress, no notes: not the peers' health, not the
    # new store's key note). The get reuses the first one's store (nothing to fetch again).
    q = user.ok(*get_args(user, net, tmp_path / "q.bin", tmp_path / "store-a", origin), "--quiet")
    assert q.stderr == "", q.stderr
    assert (tmp_path / "q.bin").stat().st_size == SIZE
    qp = user.ok("put", small, "--store", tmp_path / "put-q", "--quiet")
    assert qp.stderr == "", qp.stderr
    content_id(qp.stdout)
    # --quiet still prints errors.
    bad = user.run("get", "stoq:" + "a" * 52, "-o", tmp_path / "x", "--store", tmp_path / "store-q", "--quiet")
    assert bad.rc != 0 and "stoq: error:" in bad.stderr, bad.stderr
