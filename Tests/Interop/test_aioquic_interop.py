"""Interop: aioquic (a QUIC stack nobody here wrote) against STOQ, both directions, hq-interop.

Part A: the aioquic client against a server — `stoq serve`, and aioquic's own server as
the reference that proves the harness (relay, certificates, client) on its own.
Part B: the aioquic server against a client — `stoq fetch`, and the aioquic client.

The `stoq` cases skip with the reason when STOQ_BIN is unset or does not implement
`serve` / `fetch` yet; the aioquic-only cases always run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from interop_certs import help_mentions
from conftest import (
    AIOQUIC_HQ,
    LOSSY_RELAY,
    PARALLEL_FILES,
    PY,
    Certs,
    Proc,
    Run,
    Tree,
    kill_server_mid_transfer,
    parse_fetched,
    run_bounded,
    stoq_available,
)

CLIENT_DEADLINE = 120.0   # a client is killed (and the test fails) after this
REFUSAL_DEADLINE = 15.0   # a refused handshake must be reported well before any idle timeout
LOSS = 0.05


def _peer_param(kind: str):  # type: ignore[no-untyped-def]
    if kind == "stoq":
        ok, reason = stoq_available()
        return pytest.param(kind, marks=pytest.mark.skipif(not ok, reason=reason), id="stoq")
    return pytest.param(kind, id=kind)


PEERS = [_peer_param("stoq"), _peer_param("aioquic")]


# --------------------------------------------------------------------------- helpers


def start_server(kind: str, procs, certs: Certs, www: Tree, *, ca: Path | None = None,  # type: ignore[no-untyped-def]
                 chacha: bool = False, key_update: bool = False,
                 identity: tuple[Path, Path] | None = None) -> Proc:
    cert, key = identity or (certs.server_cert, certs.server_key)
    if kind == "stoq":
        assert not key_update, "stoq serve has no such option"
        binary, _ = _stoq()
        cmd = [binary, "serve", str(www.root), "--listen", "[::1]:0",
               "--cert", str(cert), "--key", str(key), "--alpn", "hq-interop"]
        if ca:
            cmd += ["--ca", str(ca)]
        if chacha:
            require_stoq_option("serve", "--cipher")
            cmd += ["--cipher", "chacha20"]
        return procs("stoq-serve", cmd)
    cmd = [PY, str(AIOQUIC_HQ), "server", "--root", str(www.root), "--listen", "[::1]:0",
           "--cert", str(cert), "--key", str(key)]
    if ca:
        cmd += ["--ca", str(ca)]
    if chacha:
        cmd += ["--ciphers", "chacha20"]
    if key_update:
        cmd += ["--key-update"]
    return procs("aioquic-server", cmd)


def require_stoq_option(sub: str, option: str) -> None:
    """Skips the test unless `stoq SUB` has OPTION (beyond the spec: e.g. --cipher)."""
    binary, _ = _stoq()
    if not help_mentions(binary, sub, option):
        pytest.skip(f"`stoq {sub}` has no {option} option")


def _stoq() -> tuple[str, str]:
    import conftest
    binary, reason = conftest._STOQ
    assert binary is not None, reason
    return binary, reason


def start_relay(procs, upstream_port: int, seed: int = 7) -> Proc:  # type: ignore[no-untyped-def]
    return procs("relay", [PY, str(LOSSY_RELAY), "--listen", "[::1]:0",
                           "--upstream", f"[::1]:{upstream_port}", "--loss", str(LOSS),
                           "--seed", str(seed)], ready="relaying")


def relay_stats(relay: Proc) -> dict[str, int]:
    """Stops the relay and checks it really dropped about LOSS of the datagrams each way."""
    rest = relay.stop()
    m = re.search(r"stats up_fwd=(\d+) up_drop=(\d+) down_fwd=(\d+) down_drop=(\d+)", rest)
    assert m, f"relay printed no stats: {rest!r}"
    stats = dict(zip(("up_fwd", "up_drop", "down_fwd", "down_drop"), map(int, m.groups())))
    for way in ("up", "down"):
        total = stats[f"{way}_fwd"] + stats[f"{way}_drop"]
        assert stats[f"{way}_drop"] > 0, f"the relay dropped nothing {way}stream: {stats}"
        if total >= 400:  # enough datagrams for the fraction to mean something
            assert LOSS / 3 < stats[f"{way}_drop"] / total < LOSS * 2.5, stats
    return stats


def aioquic_client(tmp: Path, port: int, paths: list[str], certs: Certs, *,
                   cert: tuple[Path, Path] | None = None, chacha: bool = False,
                   key_update: bool = False, timeout: float = 90.0, alpn: str | None = None) -> tuple[Run, dict]:
    report = tmp / f"client-{len(list(tmp.glob('client-*.json')))}.json"
    cmd = [PY, str(AIOQUIC_HQ), "client", *[f"https://[::1]:{port}{p}" for p in paths],
           "--ca", str(certs.ca), "--json", str(report), "--quiet", "--timeout", str(timeout)]
    if cert:
        cmd += ["--cert", str(cert[0]), "--key", str(cert[1])]
    if chacha:
        cmd += ["--ciphers", "chacha20"]
    if key_update:
        cmd += ["--key-update", "--key-update-after", "1000000"]
    if alpn:
        cmd += ["--alpn", alpn]
    run = run_bounded(cmd, CLIENT_DEADLINE)
    assert not run.timed_out, f"aioquic client hung (killed after {CLIENT_DEADLINE} s): {run.stderr}"
    data = json.loads(report.read_text()) if report.exists() else {}
    return run, data


def fetch(kind: str, tmp: Path, port: int, path: str, certs: Certs, *,
          cert: tuple[Path, Path] | None = None, deadline: float = CLIENT_DEADLINE,
          chacha: bool = False) -> tuple[Run, int, str]:
    """Fetch one URL with `stoq fetch` or the aioquic client; returns (run, bytes, sha256)."""
    url = f"https://[::1]:{port}{path}"
    if kind == "stoq":
        binary, _ = _stoq()
        out = tmp / ("fetched-" + Path(path).name)
        cmd = [binary, "fetch", url, "-o", str(out), "--ca", str(certs.ca), "--alpn", "hq-interop"]
        if cert:
            cmd += ["--cert", str(cert[0]), "--key", str(cert[1])]
        if chacha:
            require_stoq_option("fetch", "--cipher")
            cmd += ["--cipher", "chacha20"]
        run = run_bounded(cmd, deadline)
        assert not run.timed_out, f"stoq fetch hung (killed after {deadline} s): {run.stderr}"
        if run.rc != 0:
            return run, 0, ""
        parsed = parse_fetched(run.stdout + run.stderr)
        assert parsed, f"stoq fetch printed no 'fetched … bytes sha256 …' line: {run.stdout!r}"
        on_disk = hashlib.sha256(out.read_bytes()).hexdigest()
        assert on_disk == parsed[1], "stoq fetch printed a SHA-256 that differs from the file it wrote"
        return run, parsed[0], parsed[1]
    run, data = aioquic_client(tmp, port, [path], certs, cert=cert, chacha=chacha)
    if run.rc != 0:
        return run, 0, ""
    return run, data["bytes"], data["sha256"]


def assert_ok(run: Run, what: str) -> None:
    assert run.rc == 0, f"{what} failed (exit {run.rc}): {run.stderr[-2000:]} {run.stdout[-500:]}"


# --------------------------------------------------------------------------- A: aioquic client → server


@pytest.mark.parametrize("server", PEERS)
class TestAioquicClient:
    def test_10mb_bit_exact(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www)
        run, r = aioquic_client(tmp_path, srv.port, ["/10mb.bin"], certs)
        assert_ok(run, "10 MB fetch")
        assert r["alpn"] == "hq-interop"
        assert r["bytes"] == www.size["/10mb.bin"]
        assert r["requests"][0]["sha256"] == www.sha["/10mb.bin"]

    def test_100_parallel_streams(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www)
        paths = [f"/p/{i:03d}.bin" for i in range(PARALLEL_FILES)]
        run, r = aioquic_client(tmp_path, srv.port, paths, certs)
        assert_ok(run, "100 parallel GETs")
        got = {q["path"]: q for q in r["requests"]}
        assert len(got) == PARALLEL_FILES
        assert len({q["stream_id"] for q in r["requests"]}) == PARALLEL_FILES
        for p in paths:
            assert got[p]["done"] and got[p]["sha256"] == www.sha[p], p

    def test_chacha20_poly1305_only(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www)
        run, r = aioquic_client(tmp_path, srv.port, ["/4mb.bin"], certs, chacha=True)
        assert_ok(run, "ChaCha20-Poly1305 fetch")
        assert r["cipher"] == "CHACHA20_POLY1305_SHA256"
        assert r["requests"][0]["sha256"] == www.sha["/4mb.bin"]

    def test_chacha20_poly1305_only_server(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        # the server restricts itself; the client offers every suite
        srv = start_server(server, procs, certs, www, chacha=True)
        run, r = aioquic_client(tmp_path, srv.port, ["/4mb.bin"], certs)
        assert_ok(run, "fetch from a ChaCha20-only server")
        assert r["cipher"] == "CHACHA20_POLY1305_SHA256"
        assert r["requests"][0]["sha256"] == www.sha["/4mb.bin"]

    def test_key_update_by_client(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www)
        run, r = aioquic_client(tmp_path, srv.port, ["/10mb.bin"], certs, key_update=True)
        assert_ok(run, "fetch with a key update")
        assert r["key_updates_local"] == 1, r
        # The server had to follow the new key phase for these bytes to arrive and verify.
        assert r["bytes_after_key_update"] > 1_000_000, r
        assert r["requests"][0]["sha256"] == www.sha["/10mb.bin"]

    def test_mutual_tls_accepted(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www, ca=certs.ca)
        run, r = aioquic_client(tmp_path, srv.port, ["/4mb.bin"], certs,
                                cert=(certs.client_cert, certs.client_key))
        assert_ok(run, "mTLS fetch with a certificate from the CA")
        assert r["requests"][0]["sha256"] == www.sha["/4mb.bin"]

    @pytest.mark.parametrize("who", ["foreign-ca", "no-certificate"])
    def test_mutual_tls_refused(self, server, who, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www, ca=certs.ca)
        cert = (certs.foreign_cert, certs.foreign_key) if who == "foreign-ca" else None
        run, r = aioquic_client(tmp_path, srv.port, ["/tiny.txt"], certs, cert=cert,
                                timeout=REFUSAL_DEADLINE * 2)
        assert run.rc == 2, f"expected a handshake failure (exit 2), got {run.rc}: {run.stderr}"
        assert "handshake failed" in run.stderr, run.stderr
        assert run.seconds < REFUSAL_DEADLINE, f"refusal took {run.seconds:.1f} s"
        assert r.get("bytes", 0) == 0, "a refused client must not receive file bytes"
        # the server is still healthy for a legitimate client
        run, r = aioquic_client(tmp_path, srv.port, ["/tiny.txt"], certs,
                                cert=(certs.client_cert, certs.client_key))
        assert_ok(run, "legitimate client after a refusal")

    def test_no_path_escape(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        secret = www.root.parent / "secret-outside-root.txt"
        secret.write_bytes(b"this file is outside the served root\n")
        secret_sha = hashlib.sha256(secret.read_bytes()).hexdigest()
        srv = start_server(server, procs, certs, www)
        escapes = ["/../secret-outside-root.txt", "/p/../../secret-outside-root.txt",
                   "/./../secret-outside-root.txt", f"/{secret}"]
        run, r = aioquic_client(tmp_path, srv.port, escapes, certs)
        assert run.rc in (0, 3), f"the connection itself must survive bad paths: exit {run.rc} {run.stderr}"
        for q in r["requests"]:
            assert q["sha256"] != secret_sha, f"{q['path']} escaped the root"
        run, r = aioquic_client(tmp_path, srv.port, ["/tiny.txt"], certs)
        assert_ok(run, "fetch after path-escape attempts")
        assert r["requests"][0]["sha256"] == www.sha["/tiny.txt"]

    def test_wrong_alpn_refused(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www)
        run, r = aioquic_client(tmp_path, srv.port, ["/tiny.txt"], certs, alpn="h3",
                                timeout=REFUSAL_DEADLINE * 2)
        assert run.rc == 2, f"expected a handshake failure (exit 2), got {run.rc}: {run.stderr}"
        assert run.seconds < REFUSAL_DEADLINE, f"refusal took {run.seconds:.1f} s"

    def test_server_killed_mid_transfer(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www)
        out = tmp_path / "out"
        out.mkdir()
        cmd = [PY, str(AIOQUIC_HQ), "client", f"https://[::1]:{srv.port}/64mb.bin", "--ca", str(certs.ca),
               "-o", str(out), "--idle-timeout", "5", "--timeout", "90", "--quiet"]
        run, gave_up_after = kill_server_mid_transfer(cmd, srv, out / "64mb.bin", deadline=60)
        assert not run.timed_out, "the client hung after its server was killed"
        assert run.rc != 0, "a transfer cut short must not be reported as a success"
        assert gave_up_after < 5 + 10, f"gave up {gave_up_after:.1f} s after the kill (idle timeout 5 s)"

    def test_lossy_relay(self, server, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server(server, procs, certs, www)
        relay = start_relay(procs, srv.port)
        run, r = aioquic_client(tmp_path, relay.port, ["/4mb.bin"], certs)
        stats = relay_stats(relay)
        assert_ok(run, f"fetch through a {LOSS:.0%} lossy relay")
        assert r["requests"][0]["sha256"] == www.sha["/4mb.bin"]
        assert stats["up_drop"] > 0 and stats["down_drop"] > 0, stats


# --------------------------------------------------------------------------- B: aioquic server → client


@pytest.mark.parametrize("client", PEERS)
class TestAioquicServer:
    def test_10mb_bit_exact(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server("aioquic", procs, certs, www)
        run, n, sha = fetch(client, tmp_path, srv.port, "/10mb.bin", certs)
        assert_ok(run, "10 MB fetch")
        assert (n, sha) == (www.size["/10mb.bin"], www.sha["/10mb.bin"])

    def test_chacha20_poly1305_only_server(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server("aioquic", procs, certs, www, chacha=True)
        run, n, sha = fetch(client, tmp_path, srv.port, "/4mb.bin", certs)
        assert_ok(run, "fetch from a ChaCha20-only server")
        assert sha == www.sha["/4mb.bin"]
        assert "cipher=CHACHA20_POLY1305_SHA256" in srv.stderr(), srv.stderr()

    def test_chacha20_poly1305_only_client(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        # the client restricts itself; the server offers every suite
        srv = start_server("aioquic", procs, certs, www)
        run, n, sha = fetch(client, tmp_path, srv.port, "/4mb.bin", certs, chacha=True)
        assert_ok(run, "ChaCha20-only fetch")
        assert sha == www.sha["/4mb.bin"]
        assert "cipher=CHACHA20_POLY1305_SHA256" in srv.stderr(), srv.stderr()

    def test_key_update_by_server(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server("aioquic", procs, certs, www, key_update=True)
        run, n, sha = fetch(client, tmp_path, srv.port, "/10mb.bin", certs)
        assert_ok(run, "fetch with a server-initiated key update")
        assert sha == www.sha["/10mb.bin"]
        m = re.search(r"key update requested at byte (\d+) of (\d+)", srv.stderr())
        assert m and int(m.group(1)) < int(m.group(2)), srv.stderr()

    def test_mutual_tls_accepted(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server("aioquic", procs, certs, www, ca=certs.ca)
        run, n, sha = fetch(client, tmp_path, srv.port, "/4mb.bin", certs,
                            cert=(certs.client_cert, certs.client_key))
        assert_ok(run, "mTLS fetch with a certificate from the CA")
        assert sha == www.sha["/4mb.bin"]

    @pytest.mark.parametrize("who", ["foreign-ca", "no-certificate"])
    def test_mutual_tls_refused(self, client, who, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server("aioquic", procs, certs, www, ca=certs.ca)
        cert = (certs.foreign_cert, certs.foreign_key) if who == "foreign-ca" else None
        run, n, sha = fetch(client, tmp_path, srv.port, "/tiny.txt", certs, cert=cert,
                            deadline=REFUSAL_DEADLINE * 2)
        assert run.rc != 0, "a client with a foreign (or no) certificate must be refused"
        assert run.seconds < REFUSAL_DEADLINE, f"refusal took {run.seconds:.1f} s"
        assert (run.stderr + run.stdout).strip(), "the refusal must come with a message"
        assert "bad_certificate" in srv.stderr() or "certificate" in srv.stderr().lower() \
            or "error=0x1" in srv.stderr(), srv.stderr()

    def test_server_certificate_from_foreign_ca_refused(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        # the server presents a certificate for localhost/::1 that our CA did not issue
        srv = start_server("aioquic", procs, certs, www, identity=(certs.foreign_cert, certs.foreign_key))
        run, n, sha = fetch(client, tmp_path, srv.port, "/tiny.txt", certs, deadline=REFUSAL_DEADLINE * 2)
        assert run.rc != 0, "a server certificate from a foreign CA must be refused"
        assert run.seconds < REFUSAL_DEADLINE, f"refusal took {run.seconds:.1f} s"
        assert (run.stderr + run.stdout).strip(), "the refusal must come with a message"

    def test_server_killed_mid_transfer(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server("aioquic", procs, certs, www)
        url = f"https://[::1]:{srv.port}/64mb.bin"
        if client == "stoq":
            binary, _ = _stoq()
            growing = tmp_path / "64mb.out"
            cmd = [binary, "fetch", url, "-o", str(growing), "--ca", str(certs.ca), "--alpn", "hq-interop"]
            limit = 45.0  # stoq fetch's own idle timeout (10 s by default) plus start-up and margin
        else:
            (tmp_path / "out").mkdir()
            growing = tmp_path / "out" / "64mb.bin"
            cmd = [PY, str(AIOQUIC_HQ), "client", url, "--ca", str(certs.ca), "-o", str(tmp_path / "out"),
                   "--idle-timeout", "5", "--timeout", "90", "--quiet"]
            limit = 15.0
        run, gave_up_after = kill_server_mid_transfer(cmd, srv, growing, deadline=90)
        assert not run.timed_out, "the client hung after its server was killed"
        assert run.rc != 0, f"a transfer cut short must not be reported as a success: {run.stdout}"
        assert gave_up_after < limit, f"gave up {gave_up_after:.1f} s after the kill"
        assert (run.stderr + run.stdout).strip(), "the failure must come with a message"

    def test_lossy_relay(self, client, procs, certs, www, tmp_path):  # type: ignore[no-untyped-def]
        srv = start_server("aioquic", procs, certs, www)
        relay = start_relay(procs, srv.port, seed=11)
        run, n, sha = fetch(client, tmp_path, relay.port, "/4mb.bin", certs)
        stats = relay_stats(relay)
        assert_ok(run, f"fetch through a {LOSS:.0%} lossy relay")
        assert sha == www.sha["/4mb.bin"]
        assert stats["up_drop"] > 0 and stats["down_drop"] > 0, stats
