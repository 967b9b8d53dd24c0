"""Debian's curl against the HTTPS listener, over HTTP/1.1 and HTTP/2 with TLS: bit-exact files,
ranges, HEAD, 304, 404, Alt-Svc and Date, a body that fails mid-way, and a pinned key."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Server

VERSIONS = {"1.1": "--http1.1", "2": "--http2"}


def curl(server: Server, path: str, version: str, *args: str, output: Path | None = None) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (scripts/bootstrap.sh installs it)")
    cmd = [
        "curl", "-sS", VERSIONS[version], "--cacert", str(server.certs.ca),
        "--resolve", f"stoq.test:{server.port}:::1", "--max-time", "60",
        "-D", "-", "-o", str(output) if output else "/dev/null", "-w", "\\nVERSION %{http_version}\\n",
        *args, server.url(path),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def status_and_headers(stdout: str) -> tuple[int, dict[str, str], str]:
    lines = [l.rstrip("\r") for l in stdout.splitlines()]
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    version = next(l.split()[1] for l in lines if l.startswith("VERSION "))
    return status, headers, version


@pytest.mark.parametrize("version", ["1.1", "2"])
def test_file_is_bit_exact_with_alt_svc_and_date(server: Server, version: str, tmp_path: Path):
    out = tmp_path / "big.bin"
    result = curl(server, "/big.bin", version, output=out)
    assert result.returncode == 0, result.stderr
    status, headers, negotiated = status_and_headers(result.stdout)
    assert status == 200
    assert negotiated == version
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256((server.root / "big.bin").read_bytes()).digest()
    assert headers["content-length"] == str((server.root / "big.bin").stat().st_size)
    assert headers["alt-svc"] == f'h3=":{server.port}"; ma=86400'
    assert headers["date"].endswith(" GMT")


@pytest.mark.parametrize("version", ["1.1", "2"])
def test_range_head_304_404(server: Server, version: str, tmp_path: Path):
    data = (server.root / "big.bin").read_bytes()
    part = tmp_path / "part"
    result = curl(server, "/big.bin", version, "-r", "1000-70999", output=part)
    assert result.returncode == 0, result.stderr
    status, headers, _ = status_and_headers(result.stdout)
    assert status == 206
    assert headers["content-range"] == f"bytes 1000-70999/{len(data)}"
    assert part.read_bytes() == data[1000:71000]

    result = curl(server, "/big.bin", version, "-I")
    assert result.returncode == 0, result.stderr
    status, headers, _ = status_and_headers(result.stdout)
    assert status == 200 and headers["content-length"] == str(len(data))
    etag = headers["etag"]

    result = curl(server, "/big.bin", version, "-H", f"If-None-Match: {etag}")
    assert result.returncode == 0, result.stderr
    assert status_and_headers(result.stdout)[0] == 304

    result = curl(server, "/no/such/file", version)
    assert status_and_headers(result.stdout)[0] == 404

    result = curl(server, "/big.bin", version, "-r", f"{len(data) + 10}-")
    assert status_and_headers(result.stdout)[0] == 416


@pytest.mark.parametrize("version,code", [("1.1", 18), ("2", 92)])
def test_a_body_failing_midway_is_an_error_for_curl(server: Server, version: str, code: int):
    # The responder promises 1 MiB and fails after 128 KiB: HTTP/1.1 closes the connection
    # (curl 18, partial file), HTTP/2 resets the stream (curl 92).
    result = curl(server, "/slow-error", version)
    assert result.returncode == code, (result.returncode, result.stderr)


def test_pinned_key_without_a_ca(server: Server):
    pin = "sha256//" + server.certs.spki_sha256_base64()
    result = curl(server, "/small.txt", "2", "-k", "--pinnedpubkey", pin)
    assert result.returncode == 0, result.stderr
    wrong = curl(server, "/small.txt", "2", "-k", "--pinnedpubkey", "sha256//" + "A" * 43 + "=")
    assert wrong.returncode == 90  # CURLE_SSL_PINNEDPUBKEYNOTMATCH


def test_keep_alive_and_multiplexing_serve_many_requests(server: Server, tmp_path: Path):
    # One curl, one connection, 250 requests: HTTP/1.1 keep-alive and HTTP/2 streams. (curl
    # resets each HTTP/2 stream it is done with; NIO's default heuristics sent GOAWAY after 200.)
    n = 250
    for version in VERSIONS:
        urls = [server.url("/small.txt")] * n
        cmd = ["curl", "-sS", VERSIONS[version], "--cacert", str(server.certs.ca), "--resolve", f"stoq.test:{server.port}:::1",
               "--max-time", "60", "-w", "%{num_connects} %{http_code}\\n", *[a for u in urls for a in (u, "-o", "/dev/null")]]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.split()
        assert lines.count("200") == n, result.stdout[-500:]
        assert sum(int(x) for x in lines[0::2]) == 1, result.stdout


def test_exchanges_are_reported_once_each(server: Server):
    # The log is written after each response: let the earlier tests' last lines land first.
    before, settled = len(server.log_lines()), time.monotonic()
    while time.monotonic() - settled < 0.5:
        time.sleep(0.05)
        if len(server.log_lines()) != before:
            before, settled = len(server.log_lines()), time.monotonic()
    for version in VERSIONS:
        assert curl(server, "/small.txt", version).returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(server.log_lines()) < before + 2:
        time.sleep(0.05)
    new = server.log_lines()[before:]
    assert [l.split()[0] for l in new] == ["h1", "h2"]
    assert all(l.endswith(" 200 17") for l in new), new


def test_a_node_certificate_from_stoq_certs_serves_https(binary, site, tmp_path: Path):
    """The listener's default certificate is the node's own, made by `stoq certs` (P-256, no IP
    SAN): it loads, and a client pinning its key (or trusting the network CA) fetches over it."""
    import os

    from conftest import Certs, start_server, stop_server

    stoq = os.environ.get("STOQ_BIN")
    if not stoq or not os.access(stoq, os.X_OK):
        pytest.skip("STOQ_BIN is not set to the release stoq")
    certs_dir = tmp_path / "certs"
    subprocess.run([stoq, "certs", "init-ca", "--out", str(certs_dir)], check=True, capture_output=True, timeout=60)
    subprocess.run([stoq, "certs", "issue", "--ca", str(certs_dir), "--name", "edge-1", "--out", str(certs_dir)],
                   check=True, capture_output=True, timeout=60)
    certs = Certs(ca=certs_dir / "ca.pem", cert=certs_dir / "edge-1.pem", key=certs_dir / "edge-1.key")
    node = start_server(binary, certs, site, tmp_path)
    try:
        pinned = subprocess.run(
            ["curl", "-sS", "--http2", "-k", "--pinnedpubkey", "sha256//" + certs.spki_sha256_base64(), "--max-time", "60",
             f"https://[::1]:{node.port}/small.txt"], capture_output=True, text=True, timeout=90)
        assert pinned.returncode == 0, pinned.stderr
        assert pinned.stdout == "hello over https\n"
    finally:
        stop_server(node)
