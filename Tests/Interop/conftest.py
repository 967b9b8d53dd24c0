"""Fixtures for the interop tests: certificates, files to serve, and bounded processes.

Every process a test starts is killed at teardown (SIGTERM, then SIGKILL), and every
wait has a deadline, so a test fails rather than hangs.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from interop_certs import Certs, help_mentions as _help_mentions, make_certs  # noqa: F401

HERE = Path(__file__).resolve().parent
AIOQUIC_HQ = HERE / "aioquic_hq.py"
LOSSY_RELAY = HERE / "lossy_relay.py"
PY = sys.executable

TEN_MB = 10_000_000
PARALLEL_FILES = 100


# --------------------------------------------------------------------------- stoq binary


def stoq_status() -> tuple[str | None, str]:
    """(path to stoq, reason) — path is None when STOQ's serve/fetch cannot be driven."""
    binary = os.environ.get("STOQ_BIN")
    if not binary:
        return None, "STOQ_BIN is not set (run through `make interop-test`)"
    if not os.access(binary, os.X_OK):
        return None, f"STOQ_BIN={binary} is not an executable file"
    missing = [s for s, n in (("serve", "--listen"), ("fetch", "--insecure"))
               if not _help_mentions(binary, s, n)]
    if missing:
        return None, f"{binary} does not implement `stoq {' / '.join(missing)}` yet"
    return binary, ""


_STOQ = stoq_status()


@pytest.fixture(scope="session")
def stoq_bin() -> str:
    binary, reason = _STOQ
    if binary is None:
        pytest.skip(reason)
    return binary


def stoq_available() -> tuple[bool, str]:
    return _STOQ[0] is not None, _STOQ[1]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Tree:
    root: Path
    sha: dict[str, str]     # "/name" -> sha256 hex
    size: dict[str, int]


@pytest.fixture(scope="session")
def www(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """Seeded random files: a 10 MB file, a 4 MB one, and 100 small distinct ones."""
    root = tmp_path_factory.mktemp("www")
    rng = random.Random(20261121)
    sha: dict[str, str] = {}
    size: dict[str, int] = {}

    def put(name: str, n: int) -> None:
        data = rng.randbytes(n)
        (root / name).write_bytes(data)
        sha["/" + name] = hashlib.sha256(data).hexdigest()
        size["/" + name] = n

    put("10mb.bin", TEN_MB)
    put("4mb.bin", 4_000_000)
    put("tiny.txt", 1024)
    put("64mb.bin", 64_000_000)  # long enough to kill its server mid-transfer
    (root / "p").mkdir()
    for i in range(PARALLEL_FILES):
        put(f"p/{i:03d}.bin", 4096 + 613 * i)
    return Tree(root, sha, size)


# --------------------------------------------------------------------------- processes


class Proc:
    """A long-running child (server or relay) that announces "READY [addr]:port".

    The announcement is looked for on stdout and on stderr. stdout is drained by a thread
    for the whole life of the process, so a chatty child never blocks on a full pipe;
    stderr goes to a file in the test's directory.
    """

    def __init__(self, name: str, cmd: list[str], log_dir: Path, ready: str, timeout: float = 30) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.stderr_path = log_dir / f"{name}.stderr"
        self.stdout_lines: list[str] = []
        self._stderr = open(self.stderr_path, "w")
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                  text=True, bufsize=1, start_new_session=True)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.port = self._wait_ready(ready, timeout)

    def _drain(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.stdout_lines.append(line.rstrip("\n"))

    def stdout(self) -> str:
        return "\n".join(self.stdout_lines)

    def _wait_ready(self, ready: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        pattern = re.compile(re.escape(ready) + r" \[([0-9a-fA-F:.]+)\]:(\d+)")
        while time.monotonic() < deadline:
            m = pattern.search(self.stdout()) or pattern.search(self.stderr())
            if m:
                return int(m.group(2))
            if self.p.poll() is not None:
                time.sleep(0.1)  # let the reader take the last lines
                m = pattern.search(self.stdout()) or pattern.search(self.stderr())
                if m:
                    return int(m.group(2))
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"{self.name} did not print '{ready} [addr]:port' within {timeout} s: "
                             f"exit={self.p.poll()} cmd={' '.join(self.cmd)} stdout={self.stdout()[-2000:]!r} "
                             f"stderr={self.stderr()[-2000:]!r}")

    def stderr(self) -> str:
        self._stderr.flush()
        try:
            return self.stderr_path.read_text(errors="replace")[-200_000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, no goodbye: the peer sees the server vanish mid-connection."""
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(timeout=5)

    def stop(self, timeout: float = 5) -> str:
        """SIGTERM, wait, SIGKILL; returns everything the child printed on stdout."""
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(timeout=5)
        self._reader.join(timeout=5)
        if not self._stderr.closed:
            self._stderr.close()
        return self.stdout()


@pytest.fixture
def procs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Starts processes for one test; all are stopped at teardown."""
    started: list[Proc] = []

    def start(name: str, cmd: list[str], ready: str = "listening on", timeout: float = 30) -> Proc:
        p = Proc(name, cmd, tmp_path, ready, timeout)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def run_bounded(cmd: list[str], timeout: float) -> Run:
    """Run a client to completion; on timeout kill its whole process group."""
    start = time.monotonic()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return Run(p.returncode, out, err, time.monotonic() - start, False)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=5)
        return Run(-9, out, err, time.monotonic() - start, True)


def kill_server_mid_transfer(client_cmd: list[str], server: Proc, growing: Path,
                             deadline: float) -> tuple[Run, float]:
    """Starts a client, kills the server once `growing` holds > 1 MB, waits for the client.

    Returns the client's run and the seconds it took to give up after the kill.
    """
    start = time.monotonic()
    p = subprocess.Popen([str(c) for c in client_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        while time.monotonic() - start < deadline:
            if p.poll() is not None:
                break
            if growing.exists() and growing.stat().st_size > 1_000_000:
                break
            time.sleep(0.02)
        killed_at = time.monotonic()
        server.kill()
        out, err = p.communicate(timeout=deadline)
        return Run(p.returncode, out, err, time.monotonic() - start, False), time.monotonic() - killed_at
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=5)
        return Run(-9, out, err, time.monotonic() - start, True), float("inf")


FETCHED = re.compile(r"fetched (\d+) bytes sha256 ([0-9a-f]{64}) in ([0-9.eE+-]+) s \(([0-9.eE+-]+) Mbit/s\)")


def parse_fetched(text: str) -> tuple[int, str, float, float] | None:
    m = FETCHED.search(text)
    if not m:
        return None
    return int(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4))


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
