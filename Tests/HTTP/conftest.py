"""Fixtures for the HTTPS-over-TCP tests: certificates, a site directory, and a running HTTPS
listener on [::1].

The listener is `stoq-https-testserver` (Tests/HTTPSTestServer: `HTTPSServer` in front of a
directory), found through `STOQ_HTTPS_TESTSERVER` or the debug/release build folders. Every wait
has a deadline and every process started here is killed at teardown.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def testserver_binary() -> str | None:
    explicit = os.environ.get("STOQ_HTTPS_TESTSERVER")
    if explicit and os.access(explicit, os.X_OK):
        return explicit
    for flavour in ("debug", "release"):
        candidate = REPO / ".build" / flavour / "stoq-https-testserver"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path

    def spki_sha256_base64(self) -> str:
        """The base64 SHA-256 of the certificate's SubjectPublicKeyInfo (curl and Chromium pin it)."""
        pub = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-pubkey", "-noout"], check=True, capture_output=True, timeout=30).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, check=True, capture_output=True, timeout=30).stdout
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class Server:
    port: int
    certs: Certs
    root: Path
    log: Path
    proc: subprocess.Popen

    def url(self, path: str, host: str = "stoq.test") -> str:
        return f"https://{host}:{self.port}{path}"

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture(scope="session")
def binary() -> str:
    found = testserver_binary()
    if found is None:
        pytest.skip("stoq-https-testserver is not built (swift build --product stoq-https-testserver, or set STOQ_HTTPS_TESTSERVER)")
    return found


@pytest.fixture(scope="session")
def certs(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run([binary, "--make-certs", str(directory)], check=True, timeout=60)
    return Certs(ca=directory / "ca.pem", cert=directory / "node.pem", key=directory / "node.key")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
    (root / "small.txt").write_text("hello over https\n")
    # A 1x1 PNG.
    (root / "pixel.png").write_bytes(base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="))
    (root / "app.js").write_text("window.scriptLoaded = true;\n")
    (root / "index.html").write_text((HERE / "page.html").read_text())
    return root


def start_server(binary: str, certs: Certs, root: Path, workdir: Path, *extra: str) -> Server:
    log = workdir / f"exchanges-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [binary, "--root", str(root), "--cert", str(certs.cert), "--key", str(certs.key), "--log", str(log), *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.startswith("LISTENING "):
            return Server(port=int(line.split()[1]), certs=certs, root=root, log=log, proc=proc)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the HTTPS test server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(binary: str, certs: Certs, site: Path, tmp_path_factory: pytest.TempPathFactory):
    running = start_server(binary, certs, site, tmp_path_factory.mktemp("server"))
    try:
        yield running
    finally:
        stop_server(running)
