"""Fixtures for the HTTP/3 tests: a certificate, seeded files, and the HTTP/3 server under test.

The server is STOQHTTP's HTTP3Server, started through the small file-serving harness
(`stoq-http3-harness`, built by `swift build`) until `stoq node --http` serves HTTP/3 itself.
Every process is killed at teardown and every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
H3CLIENT = HERE / "h3client.py"


def harness_path() -> Path | None:
    env = os.environ.get("STOQ_HTTP3_HARNESS")
    candidates = [Path(env)] if env else [REPO / ".build/debug/stoq-http3-harness"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


@dataclass(frozen=True)
class Files:
    root: Path
    sha: dict[str, str]
    data: dict[str, bytes]


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cert")
    key, pem = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(pem), "-days", "2", "-subj", "/CN=stoq.test",
                    "-addext", "subjectAltName=DNS:stoq.test,DNS:localhost,IP:::1"],
                   check=True, capture_output=True, timeout=60)
    return pem, key


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("www")
    rng = random.Random(20261207)
    sha: dict[str, str] = {}
    data: dict[str, bytes] = {}

    def put(name: str, body: bytes) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
        sha["/" + name] = hashlib.sha256(body).hexdigest()
        data["/" + name] = body

    put("empty.bin", b"")
    put("one.txt", b"x")
    put("index.html", b"<!doctype html><title>stoq</title><p>hello over h3</p>\n")
    put("100k.bin", rng.randbytes(100_000))
    put("5mb.bin", rng.randbytes(5_000_000))
    put("dir/name with space.txt", b"spaces are percent-encoded\n")
    return Files(root, sha, data)


class Server:
    def __init__(self, binary: Path, root: Path, cert: tuple[Path, Path], log: Path, extra: list[str]) -> None:
        self.log_path = log
        self.lines: list[str] = []
        self._err = open(log, "w")
        self.p = subprocess.Popen([str(binary), "--root", str(root), "--cert", str(cert[0]), "--key", str(cert[1]),
                                   "--port", "0", *extra],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                  bufsize=1, start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 30
        self.port = 0
        while time.monotonic() < deadline and self.port == 0:
            for line in list(self.lines):
                if line.startswith("listening "):
                    self.port = int(line.split()[1])
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        if self.port == 0:
            self.stop()
            raise AssertionError(f"the HTTP/3 server did not start: {log.read_text()[-2000:]}")

    def _drain(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def finished(self) -> list[str]:
        return [l for l in self.lines if l.startswith("finished ")]

    def wait_finished(self, count: int, timeout: float = 10) -> list[str]:
        """The `finished` lines once there are `count` of them (or whatever came by the deadline)."""
        deadline = time.monotonic() + timeout
        while len(self.finished()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.finished()

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=5)
        self._err.close()


@pytest.fixture
def server(files: Files, cert: tuple[Path, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    binary = harness_path()
    if binary is None:
        pytest.skip("stoq-http3-harness is not built (swift build --product stoq-http3-harness)")
    started: list[Server] = []

    def start(*extra: str) -> Server:
        s = Server(binary, files.root, cert, tmp_path / f"server{len(started)}.log", list(extra))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def h3(port: int, *requests: str, timeout: float = 60) -> list[dict]:
    """Runs the aioquic client; returns one result per request (see h3client.py)."""
    import json
    r = subprocess.run([sys.executable, str(H3CLIENT), "--port", str(port), "--timeout", str(timeout), *requests],
                       capture_output=True, text=True, timeout=timeout + 30)
    results = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert len(results) == len(requests), f"h3client failed ({r.returncode}): {r.stderr[-2000:]}"
    return results
