"""Fixtures for the interop tests: certificates, files to serve, and bounded processes.

Every process a test starts is killed at teardown (SIGTERM, then SIGKILL), and every
wait has a deadline, so a test fails rather than hangs.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
AIOQUIC_HQ = HERE / "aioquic_hq.py"
LOSSY_RELAY = HERE / "lossy_relay.py"
PY = sys.executable

TEN_MB = 10_000_000
PARALLEL_FILES = 100


# --------------------------------------------------------------------------- stoq binary


def _help_mentions(binary: str, sub: str, needle: str) -> bool:
    try:
        r = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # swift-argument-parser prints the root help (exit 0) for an unknown subcommand,
    # so the exit status alone does not prove the subcommand exists.
    return r.returncode == 0 and needle in (r.stdout + r.stderr) and f"stoq {sub}" in r.stdout


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


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certs:
    ca: Path            # CA certificate both sides trust
    server_cert: Path   # SAN DNS:localhost, IP:::1
    server_key: Path
    client_cert: Path   # issued by ca
    client_key: Path
    foreign_ca: Path    # an unrelated CA
    foreign_cert: Path  # client certificate issued by foreign_ca
    foreign_key: Path
    made_by: str


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr or r.stdout}")
    return r


def _openssl_ca(d: Path, name: str) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2",
          "-subj", f"/CN={name}",
          "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"])
    return d / "ca.pem", d / "ca.key"


def _openssl_leaf(ca_dir: Path, out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    key, csr, pem = out / f"{name}.key", out / f"{name}.csr", out / f"{name}.pem"
    ext = out / f"{name}.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n"
                   "subjectAltName=DNS:localhost,IP:::1\n")
    _run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"])
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.pem"),
          "-CAkey", str(ca_dir / "ca.key"), "-CAcreateserial", "-days", "2",
          "-out", str(pem), "-extfile", str(ext)])
    return pem, key


def _stoq_ca(binary: str, d: Path, name: str) -> tuple[Path, Path]:
    _run([binary, "certs", "init-ca", "--out", str(d), "--name", name])
    return d / "ca.pem", d / "ca.key"


def _stoq_leaf(binary: str, ca_dir: Path, out: Path, name: str) -> tuple[Path, Path]:
    _run([binary, "certs", "issue", "--ca", str(ca_dir), "--name", name,
          "--dns", "localhost", "--ip", "::1", "--out", str(out)])
    return out / f"{name}.pem", out / f"{name}.key"


def make_certs(root: Path) -> Certs:
    """Prefer `stoq certs` (STOQ_BIN) so STOQ's own certificates are what peers read."""
    binary = os.environ.get("STOQ_BIN")
    use_stoq = bool(binary) and _help_mentions(binary, "certs", "init-ca")
    if use_stoq:
        ca, leaf, made_by = (lambda d, n: _stoq_ca(binary, d, n)), \
            (lambda c, o, n: _stoq_leaf(binary, c, o, n)), f"stoq certs ({binary})"
    else:
        ca, leaf, made_by = _openssl_ca, _openssl_leaf, "openssl"
    ca_pem, _ = ca(root / "ca", "Interop Test CA")
    server_pem, server_key = leaf(root / "ca", root / "server", "server")
    client_pem, client_key = leaf(root / "ca", root / "client", "client")
    foreign_pem, _ = ca(root / "foreign-ca", "Foreign CA")
    foreign_cert, foreign_key = leaf(root / "foreign-ca", root / "foreign", "intruder")
    return Certs(ca_pem, server_pem, server_key, client_pem, client_key,
                 foreign_pem, foreign_cert, foreign_key, made_by)


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
    (root / "p").mkdir()
    for i in range(PARALLEL_FILES):
        put(f"p/{i:03d}.bin", 4096 + 613 * i)
    return Tree(root, sha, size)


# --------------------------------------------------------------------------- processes


class Proc:
    """A long-running child (server or relay) whose first stdout line we wait for."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, ready: str, timeout: float = 30) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.stderr_path = log_dir / f"{name}.stderr"
        self.stdout_lines: list[str] = []
        self._stderr = open(self.stderr_path, "w")
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                  text=True, bufsize=1, start_new_session=True)
        self.port = self._wait_ready(ready, timeout)

    def _wait_ready(self, ready: str, timeout: float) -> int:
        sel = selectors.DefaultSelector()
        assert self.p.stdout is not None
        sel.register(self.p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        pattern = re.compile(re.escape(ready) + r" \[([0-9a-fA-F:.]+)\]:(\d+)")
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = self.p.stdout.readline()
            if not line:
                break
            self.stdout_lines.append(line.rstrip("\n"))
            m = pattern.search(line)
            if m:
                sel.close()
                return int(m.group(2))
        sel.close()
        self.stop()
        raise AssertionError(f"{self.name} did not print '{ready} [addr]:port' within {timeout} s: "
                             f"exit={self.p.poll()} stdout={self.stdout_lines} stderr={self.stderr()}")

    def stderr(self) -> str:
        self._stderr.flush()
        try:
            return self.stderr_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5) -> str:
        """SIGTERM, wait, SIGKILL; returns the rest of stdout."""
        rest = ""
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            rest, _ = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rest, _ = self.p.communicate(timeout=5)
        self._stderr.close()
        return rest or ""


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


FETCHED = re.compile(r"fetched (\d+) bytes sha256 ([0-9a-f]{64}) in ([0-9.eE+-]+) s \(([0-9.eE+-]+) Mbit/s\)")


def parse_fetched(text: str) -> tuple[int, str, float, float] | None:
    m = FETCHED.search(text)
    if not m:
        return None
    return int(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4))


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
