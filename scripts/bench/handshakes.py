#!/usr/bin/env python3
"""Server CPU per QUIC handshake: `stoq serve` with mutual TLS beside ngtcp2's `gtlsserver`.

    handshakes.py --stoq /abs/path/to/stoq [--out DIR] [-n 300] [--rounds 3]

The client is aioquic (Python), run as one process per round that opens -n connections one
after another: handshake (verifying the server against the test CA, presenting the test
client certificate where the row says so), then close, then the next. Only the server's CPU
is measured: its utime + stime from /proc/PID/stat before and after the round, after the
server has gone quiet. So the client's own (large) cost does not enter the figure, and

    CPU per handshake = (server CPU-seconds over the round) / (handshakes completed)
    handshakes/s per core = 1 / CPU per handshake

Rows (each server is started once and measured in every round; rounds interleave the rows
so load from other processes spreads over all of them; the medians of the rounds are shown):

  stoq mTLS        stoq serve --ca: client certificate required and verified against the CA
  stoq mTLS, new   the same server, each handshake with a client certificate (own key) it has
                   not seen: the chain is verified in full (no cached verdict applies)
  stoq TLS         stoq serve without --ca: no client certificate asked for
  gtlsserver mTLS  gtlsserver --verify-client: the client sends its certificate and proves its
                   key (CertificateVerify), but gtlsserver does not verify the chain
  gtlsserver TLS   gtlsserver: no client certificate

Each handshake is closed as soon as the client has it (so the server's ACK delay does not set
the pace). A control handshake that waits for an answered PING must fail against the stoq mTLS
server with a client certificate from an unrelated CA (and succeed with the test CA's), so the figure is for a server that really verifies. Environment:
BENCH_HANDSHAKES (-n), BENCH_HANDSHAKE_ROUNDS (--rounds). The JSON result goes to
OUT/handshakes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from transport import Server, free_port, loadavg, make_certs, help_mentions  # noqa: E402

PY = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")

CLIENT = r"""
import asyncio, socket, sys, time
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

port, alpn, ca, n, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cert, key = (sys.argv[6], sys.argv[7]) if len(sys.argv) > 7 else (None, None)
many = cert is not None and cert.endswith("/")  # a directory of client-I.pem / client-I.key

async def one(loop, i):
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name="localhost")
    config.load_verify_locations(cafile=ca)
    if many:
        config.load_cert_chain(f"{cert}client-{i}.pem", f"{cert}client-{i}.key")
    elif cert:
        config.load_cert_chain(cert, key)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0, 0, 0))
    quic = QuicConnection(configuration=config)
    transport, protocol = await loop.create_datagram_endpoint(lambda: QuicConnectionProtocol(quic), sock=sock)
    try:
        protocol.connect(("::1", port, 0, 0))
        await asyncio.wait_for(protocol.wait_connected(), timeout=10)
        if mode == "ping":
            # A TLS 1.3 client is done before the server has checked its certificate: only
            # an answered PING shows that the server accepted it.
            await asyncio.wait_for(protocol.ping(), timeout=3)
        # Close at once: the server gets our Finished and then the CONNECTION_CLOSE, so it
        # completes its side of the handshake and then drops the connection.
        protocol.close()
        await asyncio.sleep(0)
        return True
    except Exception as exc:  # counted and reported
        print(f"handshake failed: {exc!r}", file=sys.stderr, flush=True)
        return False
    finally:
        transport.close()

async def main():
    loop = asyncio.get_running_loop()
    ok = 0
    start = time.perf_counter()
    for i in range(n):
        ok += await one(loop, i)
    secs = time.perf_counter() - start
    print(f"handshakes {ok} of {n} in {secs:.3f} s", flush=True)

asyncio.run(main())
"""


def make_client_certs(ca_pem: Path, ca_key: Path, out: Path, n: int) -> Path:
    """n client certificates (P-256, chain = the leaf), each with its own key, from the test CA,
    for the rows where every handshake presents a certificate the server has not seen."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"client-{i}")]))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
                .sign(signer, hashes.SHA256()))
        (out / f"client-{i}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"client-{i}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def quiet_cpu(pid: int, settle: float = 0.15, limit: float = 5.0) -> float:
    """The server's CPU-seconds once it stops using CPU (closing connections, timers)."""
    last = cpu_seconds(pid)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = cpu_seconds(pid)
        if now == last:
            return now
        last = now
    return last


class Row:
    def __init__(self, key: str, label: str, alpn: str, client_cert: bool, fresh: bool = False) -> None:
        self.key, self.label, self.alpn, self.client_cert = key, label, alpn, client_cert
        self.fresh = fresh  # a certificate the server has not seen, every handshake
        self.server: Server | None = None
        self.unavailable: str | None = None
        self.ms: list[float] = []        # server CPU ms per handshake, one per round
        self.wall: list[float] = []      # client-observed handshakes/s (client-bound)
        self.errors: list[str] = []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stoq")
    p.add_argument("--out", default=str(Path.cwd() / "bench-out"))
    p.add_argument("-n", type=int, default=int(os.environ.get("BENCH_HANDSHAKES", "300")))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_HANDSHAKE_ROUNDS", "3")))
    p.add_argument("--only", default=os.environ.get("BENCH_HANDSHAKE_ONLY", ""),
                   help="comma list of row keys: stoq-mtls,stoq-mtls-new,stoq-tls,gtls-mtls,gtls-tls")
    a = p.parse_args()
    out = Path(a.out).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stoq = a.stoq if a.stoq and os.access(a.stoq, os.X_OK) else None
    gtls = shutil.which("gtlsserver") or ("/usr/sbin/gtlsserver" if Path("/usr/sbin/gtlsserver").exists() else None)
    try:
        import aioquic  # noqa: F401
    except ImportError:
        print("handshakes: skipped (aioquic is not installed: pip install aioquic)")
        return 0

    certs_dir = out / "handshake-certs"
    shutil.rmtree(certs_dir, ignore_errors=True)
    c = make_certs(certs_dir, stoq if stoq and help_mentions(stoq, "certs", "init-ca") else None)
    files = out / "handshake-files"
    files.mkdir(parents=True, exist_ok=True)

    rows = [Row("stoq-mtls", "stoq serve --ca (client cert verified)", "hq-interop", True),
            Row("stoq-mtls-new", "stoq serve --ca, a new client cert every handshake", "hq-interop", True, fresh=True),
            Row("stoq-tls", "stoq serve (no client cert)", "hq-interop", False),
            Row("gtls-mtls", "gtlsserver --verify-client (cert sent, chain not verified)", "h3", True),
            Row("gtls-tls", "gtlsserver (no client cert)", "h3", False)]
    only = {k.strip() for k in a.only.split(",") if k.strip()}
    for r in rows:
        if only and r.key not in only:
            r.unavailable = "skipped (--only)"
        elif r.key.startswith("stoq") and not stoq:
            r.unavailable = "no stoq binary"
        elif r.key.startswith("gtls") and not gtls:
            r.unavailable = "gtlsserver not installed (Debian ngtcp2-server)"
        if r.unavailable:
            continue
        try:
            if r.fresh:
                continue  # measured against the stoq-mtls server (started below or above)
            if r.key.startswith("stoq"):
                cmd = [stoq, "serve", files, "--listen", "[::1]:0", "--cert", c.server_cert,
                       "--key", c.server_key, "--alpn", "hq-interop"]
                if r.client_cert:
                    cmd += ["--ca", c.ca]
                r.server = Server(r.key, cmd, logs / f"handshakes-{r.key}.log")
            else:
                port = free_port()
                cmd = [gtls, "-q", *(["--verify-client"] if r.client_cert else []), "-d", files, "::1", port,
                       c.server_key, c.server_cert]
                r.server = Server(r.key, cmd, logs / f"handshakes-{r.key}.log", port=port)
        except RuntimeError as exc:
            r.unavailable = f"server failed to start: {exc}"

    mtls = next((r for r in rows if r.key == "stoq-mtls"), None)
    fresh_dir: Path | None = None
    for r in rows:
        if r.fresh and not r.unavailable:
            if mtls is None or mtls.server is None:
                r.unavailable = "needs the stoq-mtls row's server"
                continue
            r.server = mtls.server
            try:
                fresh_dir = make_client_certs(c.ca, c.ca.parent / "ca.key", certs_dir / "fresh", a.n * a.rounds + 5)
            except Exception as exc:  # noqa: BLE001 — reported in the row
                r.unavailable = f"could not make client certificates: {exc}"

    def client(r: Row, n: int, cert: tuple[Path, Path] | None, mode: str = "close") -> tuple[int, float, str]:
        assert r.server is not None
        args = [PY, "-c", CLIENT, str(r.server.port), r.alpn, str(c.ca), str(n), mode]
        if cert:
            tail = "/" if r.fresh else ""  # the client reads client-I.pem/.key from that directory
            args += [f"{cert[0]}{tail}", f"{cert[1]}{tail}"]
        pr = subprocess.run(args, capture_output=True, text=True, timeout=60 + n)
        line = next((x for x in pr.stdout.splitlines() if x.startswith("handshakes ")), "")
        if not line:
            return 0, 0.0, (pr.stderr or pr.stdout).strip()[-300:]
        parts = line.split()
        return int(parts[1]), float(parts[5]), pr.stderr.strip()[-300:]

    load_start = loadavg()
    live = [r for r in rows if not r.unavailable]
    # Control: the mTLS server must refuse a client whose certificate another CA issued, and
    # accept ours.
    control = "not run"
    for r in live:
        if r.key == "stoq-mtls":
            good, _, err = client(r, 1, (c.client_cert, c.client_key), "ping")
            if not good:
                r.errors.append(f"the test client certificate was refused: {err}")
            ok, _, _ = client(r, 1, (c.foreign_cert, c.foreign_key), "ping")
            control = "refused (good)" if ok == 0 else "ACCEPTED: the server does not verify client certificates"
            if ok:
                r.errors.append("a client certificate from an unrelated CA was accepted")
    def cert_for(r: Row, round_: int) -> tuple[Path, Path] | None:
        if r.fresh:
            assert fresh_dir is not None
            d = fresh_dir / f"round-{round_}"
            if not d.exists():  # each round its own unseen certificates: client-0 … client-(n-1)
                d.mkdir()
                for i in range(a.n):
                    j = round_ * a.n + i
                    for ext in ("pem", "key"):
                        (d / f"client-{i}.{ext}").symlink_to(fresh_dir / f"client-{j}.{ext}")
            return (d, d)
        return (c.client_cert, c.client_key) if r.client_cert else None

    for r in live:  # warm-up: first connections pay one-time set-up (page faults, caches)
        if not r.fresh:
            client(r, 5, (c.client_cert, c.client_key) if r.client_cert else None)
    for round_ in range(a.rounds):
        for r in live:
            assert r.server is not None
            pid = r.server.p.pid
            before = quiet_cpu(pid)
            done, secs, err = client(r, a.n, cert_for(r, round_))
            after = quiet_cpu(pid)
            if done < a.n:
                r.errors.append(f"{a.n - done} of {a.n} handshakes failed: {err}")
            if done:
                r.ms.append((after - before) * 1e3 / done)
                r.wall.append(done / secs)
    for r in live:
        assert r.server is not None
        if not r.fresh:
            r.server.stop()

    base = next((statistics.median(r.ms) for r in rows if r.key == "gtls-tls" and r.ms), None)
    print(f"server CPU per handshake over [::1], {a.n} sequential handshakes per round, {a.rounds} rounds "
          f"(median); client: aioquic {aioquic_version()}, one connection at a time, ECDSA P-256 certificates "
          f"({c.made_by})")
    head = ("server", "CPU ms/handshake", "min–max", "handshakes/s/core", "vs gtlsserver", "client-bound hs/s")
    body = []
    result: dict = {"n": a.n, "rounds": a.rounds, "control_foreign_client": control, "rows": {}}
    for r in rows:
        if r.unavailable or not r.ms:
            body.append((r.label, r.unavailable or "; ".join(r.errors)[:80] or "n/a", "", "", "", ""))
            continue
        med = statistics.median(r.ms)
        body.append((r.label, f"{med:.2f}", f"{min(r.ms):.2f}–{max(r.ms):.2f}", f"{1e3 / med:.0f}",
                     f"{base / med:.2f}×" if base else "n/a", f"{statistics.median(r.wall):.0f}"))
        result["rows"][r.key] = {"label": r.label, "cpu_ms_per_handshake": r.ms, "median_ms": med,
                                 "handshakes_per_s_per_core": 1e3 / med, "client_hs_per_s": r.wall,
                                 "errors": r.errors}
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    for row in [head, *body]:
        print("  " + "  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row)).rstrip())
    for r in rows:
        for e in r.errors:
            print(f"  {r.key}: {e}")
    print(f"control: a client certificate from an unrelated CA against stoq mTLS: {control}")
    print(f"vs gtlsserver = gtlsserver (no client cert) CPU / this row's CPU (higher is better). "
          f"Load average at start {load_start}, at end {loadavg()} ({os.cpu_count()} cores).")
    (out / "handshakes.json").write_text(json.dumps(result, indent=2))
    return 1 if any(r.errors for r in rows) else 0


def aioquic_version() -> str:
    try:
        import aioquic
        return aioquic.__version__
    except ImportError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
