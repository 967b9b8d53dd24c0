#!/usr/bin/env python3
"""hq-interop (HTTP/0.9 over QUIC) client and server built on the aioquic library.

This is STOQ's third-party peer: a QUIC stack nobody on the team wrote. It speaks the
ALPN ``hq-interop`` the way the QUIC interop runner does: the client opens one
bidirectional stream per request, sends ``GET /path\\r\\n`` and finishes the stream; the
server answers with the file's bytes and FIN.

    aioquic_hq.py server --root DIR --listen '[::1]:0' --cert C --key K [--ca CA]
    aioquic_hq.py client https://[::1]:PORT/a.bin [URL ...] [-n N] [--ca CA | --insecure]

Options shared by both roles: ``--ciphers chacha20`` (TLS_CHACHA20_POLY1305_SHA256
only), ``--key-update`` (initiate one 1-RTT key update mid-transfer), ``--cert/--key``
(our certificate), ``--ca`` (trust root for the peer; for the server it makes a client
certificate mandatory, refused unless it chains to that CA).

The client prints one line per request unless ``--quiet``, then a summary line in the
same shape as ``stoq fetch``::

    fetched BYTES bytes sha256 HEX in SECONDS s (MBITS Mbit/s)

(for several requests HEX is the SHA-256 of the concatenated per-request digests in
request order) and can write a JSON report (``--json FILE``) that the tests read. Exit
status: 0 on success, 2 on a handshake / connection failure, 3 on a bad response,
4 on timeout.

Sockets are IPv6 only (IPV6_V6ONLY), like STOQ.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from aioquic import tls
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)

ALPN = "hq-interop"
CHUNK = 1 << 20  # bytes read from disk per refill
SEND_HIGH_WATER = 4 << 20  # unacknowledged bytes buffered per stream before we stop reading


class AlertCertificateRequired(tls.Alert):
    """TLS alert 116: the server asked for a client certificate and got none."""

    description = tls.AlertDescription.certificate_required


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def parse_hostport(text: str) -> tuple[str, int]:
    """'[::1]:4433' -> ('::1', 4433). IPv6 literals only need brackets."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return host, int(port)


def make_configuration(args: argparse.Namespace, is_client: bool) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[args.alpn],
        idle_timeout=args.idle_timeout,
        max_data=args.window,
        max_stream_data=args.window,
        max_datagram_size=args.max_datagram_size,
    )
    if args.ciphers == "chacha20":
        config.cipher_suites = [tls.CipherSuite.CHACHA20_POLY1305_SHA256]
    elif args.ciphers not in (None, "all"):
        raise SystemExit(f"unknown --ciphers {args.ciphers!r} (use chacha20 or all)")
    if args.cert:
        if not args.key:
            raise SystemExit("--cert needs --key")
        config.load_cert_chain(args.cert, args.key)
    if is_client:
        if args.insecure:
            config.verify_mode = ssl.CERT_NONE
        elif args.ca:
            config.load_verify_locations(cafile=args.ca)
        if args.server_name:
            config.server_name = args.server_name
    return config


class KeyUpdateCounter:
    """Counts 1-RTT key phase changes (ours and the peer's) by watching the CryptoPair."""

    def __init__(self) -> None:
        self.local = 0
        self.remote = 0
        self._installed = False

    def install(self, quic: QuicConnection) -> None:
        if self._installed:
            return
        pair = quic._cryptos.get(tls.Epoch.ONE_RTT)
        if pair is None:
            return
        original = pair._update_key

        def counted(trigger: str) -> None:
            if trigger == "local_update":
                self.local += 1
            else:
                self.remote += 1
            original(trigger)

        pair._update_key = counted  # instance attribute: this connection only
        self._installed = True


def require_client_certificate(quic: QuicConnection, cafile: str) -> None:
    """Make a server connection ask for a client certificate and verify it against cafile.

    aioquic's server does not authenticate clients on its own (it has a test-only
    switch to send CertificateRequest and then accepts whatever comes back), so we turn
    that switch on and add the two checks a TLS server must do: a certificate is present
    (else alert certificate_required) and it chains to our CA (else bad_certificate).
    Patched on this connection's TLS context only, right after aioquic creates it.
    """
    original_initialize = quic._initialize

    def initialize(peer_cid: bytes) -> None:
        original_initialize(peer_cid)
        ctx = quic.tls
        ctx._request_client_certificate = True
        handle_certificate = ctx._server_handle_certificate
        handle_verify = ctx._server_handle_certificate_verify

        def on_certificate(input_buf) -> None:  # type: ignore[no-untyped-def]
            handle_certificate(input_buf)
            if ctx._peer_certificate is None:
                raise AlertCertificateRequired("client certificate required")

        def on_certificate_verify(input_buf) -> None:  # type: ignore[no-untyped-def]
            handle_verify(input_buf)  # proves possession of the key
            tls.verify_certificate(
                certificate=ctx._peer_certificate,
                chain=ctx._peer_certificate_chain,
                cafile=cafile,
            )

        ctx._server_handle_certificate = on_certificate
        ctx._server_handle_certificate_verify = on_certificate_verify

    quic._initialize = initialize


# --------------------------------------------------------------------------- server


@dataclass
class Outgoing:
    path: str
    file: object  # open binary file
    size: int
    sent: int = 0


class HqServerProtocol(QuicConnectionProtocol):
    """One server connection: parses GET requests, streams files with back-pressure."""

    options: argparse.Namespace  # set on the class by run_server

    def __init__(self, quic: QuicConnection, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        if self.options.ca:
            require_client_certificate(quic, self.options.ca)
        super().__init__(quic, *a, **kw)
        self._requests: dict[int, bytearray] = {}
        self._outgoing: dict[int, Outgoing] = {}
        self._keys = KeyUpdateCounter()
        self._key_update_done = False
        self._root = os.path.realpath(self.options.root)

    # requests -------------------------------------------------------------
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self._keys.install(self._quic)
            if not self.options.quiet:
                log(f"handshake completed alpn={event.alpn_protocol} "
                    f"cipher={self._quic.tls.key_schedule.cipher_suite.name}")
        elif isinstance(event, StreamDataReceived):
            buf = self._requests.setdefault(event.stream_id, bytearray())
            buf += event.data
            if len(buf) > 4096:
                self._quic.reset_stream(event.stream_id, 0x1)
                return
            if event.end_stream:
                self._start_response(event.stream_id, bytes(self._requests.pop(event.stream_id)))
        elif isinstance(event, StreamReset):
            out = self._outgoing.pop(event.stream_id, None)
            if out:
                out.file.close()
        elif isinstance(event, ConnectionTerminated):
            for out in self._outgoing.values():
                out.file.close()
            self._outgoing.clear()
            if not self.options.quiet or event.error_code:
                log(f"connection closed error={event.error_code:#x} "
                    f"reason={event.reason_phrase!r} key_updates local={self._keys.local} "
                    f"remote={self._keys.remote}")

    def _start_response(self, stream_id: int, request: bytes) -> None:
        line = request.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
        parts = line.split()
        if len(parts) != 2 or parts[0] != b"GET":
            log(f"stream {stream_id}: bad request {line[:80]!r}")
            self._quic.reset_stream(stream_id, 0x2)
            return
        path = parts[1].decode("utf-8", "replace")
        full = os.path.realpath(os.path.join(self._root, path.lstrip("/")))
        if not (full == self._root or full.startswith(self._root + os.sep)) or not os.path.isfile(full):
            log(f"stream {stream_id}: not found {path!r}")
            self._quic.send_stream_data(stream_id, b"", end_stream=True)
            return
        f = open(full, "rb")
        self._outgoing[stream_id] = Outgoing(path, f, os.fstat(f.fileno()).st_size)

    # sending with back-pressure ---------------------------------------------
    def _refill(self) -> None:
        for stream_id, out in list(self._outgoing.items()):
            stream = self._quic._streams.get(stream_id)
            if stream is None:
                out.file.close()
                del self._outgoing[stream_id]
                continue
            while len(stream.sender._buffer) < SEND_HIGH_WATER:
                data = out.file.read(CHUNK)
                last = out.sent + len(data) >= out.size or not data
                self._quic.send_stream_data(stream_id, data, end_stream=last)
                out.sent += len(data)
                self._maybe_update_key(out)
                if last:
                    out.file.close()
                    del self._outgoing[stream_id]
                    break

    def _maybe_update_key(self, out: Outgoing) -> None:
        if not self.options.key_update or self._key_update_done:
            return
        if out.sent >= min(self.options.key_update_after, out.size // 2) and out.sent < out.size:
            self._key_update_done = True
            self._quic.request_key_update()
            log(f"key update requested at byte {out.sent} of {out.size} ({out.path})")

    def transmit(self) -> None:
        self._refill()
        super().transmit()


async def run_server(args: argparse.Namespace) -> int:
    if not (args.cert and args.key):
        raise SystemExit("server needs --cert and --key")
    config = make_configuration(args, is_client=False)
    HqServerProtocol.options = args
    host, port = parse_hostport(args.listen)
    server = await serve(host, port, configuration=config, create_protocol=HqServerProtocol)
    sockname = server._transport.get_extra_info("sockname")
    print(f"listening on [{sockname[0]}]:{sockname[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    return 0


# --------------------------------------------------------------------------- client


@dataclass
class Request:
    path: str
    stream_id: int = -1
    sha: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    size: int = 0
    out: object = None
    done: bool = False
    error: str | None = None
    first_byte_at: float | None = None


class HqClientProtocol(QuicConnectionProtocol):
    def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.requests: dict[int, Request] = {}
        self.all_done = asyncio.Event()
        self.terminated: ConnectionTerminated | None = None
        self.keys = KeyUpdateCounter()
        self.key_update_after: int | None = None
        self.key_update_at: int | None = None
        self.received = 0
        self.received_after_update = 0
        self.handshake_at: float | None = None
        self.cipher: str | None = None
        self.alpn: str | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_at = time.perf_counter()
            self.alpn = event.alpn_protocol
            self.cipher = self._quic.tls.key_schedule.cipher_suite.name
            self.keys.install(self._quic)
        elif isinstance(event, StreamDataReceived):
            req = self.requests.get(event.stream_id)
            if req is None:
                return
            if req.first_byte_at is None and event.data:
                req.first_byte_at = time.perf_counter()
            req.sha.update(event.data)
            req.size += len(event.data)
            self.received += len(event.data)
            if self.key_update_at is not None:
                self.received_after_update += len(event.data)
            if req.out is not None:
                req.out.write(event.data)
            if (self.key_update_after is not None and self.key_update_at is None
                    and self.received >= self.key_update_after):
                self.key_update_at = self.received
                self._quic.request_key_update()
            if event.end_stream:
                req.done = True
                self._check_done()
        elif isinstance(event, StreamReset):
            req = self.requests.get(event.stream_id)
            if req is not None:
                req.error = f"stream reset by peer (code {event.error_code})"
                req.done = True
                self._check_done()
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            self.all_done.set()

    def _check_done(self) -> None:
        if all(r.done for r in self.requests.values()):
            self.all_done.set()


async def run_client(args: argparse.Namespace) -> int:
    urls = [urlparse(u) for u in args.urls]
    hosts = {(u.hostname, u.port or 443) for u in urls}
    if len(hosts) != 1:
        raise SystemExit("all URLs must name the same host and port (one connection)")
    host, port = hosts.pop()
    if args.connect:
        chost, cport = parse_hostport(args.connect)
    else:
        chost, cport = host, port
    config = make_configuration(args, is_client=True)
    if config.server_name is None:
        config.server_name = host
    n = args.n or len(urls)
    paths = [(urls[i % len(urls)].path or "/") for i in range(n)]

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::", 0, 0, 0))
    quic = QuicConnection(configuration=config)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: HqClientProtocol(quic), sock=sock)
    assert isinstance(protocol, HqClientProtocol)
    if args.key_update:
        protocol.key_update_after = args.key_update_after

    report: dict = {"ok": False, "requests": []}
    start = time.perf_counter()
    code = 0
    try:
        protocol.connect((chost, cport, 0, 0))
        try:
            await asyncio.wait_for(protocol.wait_connected(), timeout=args.timeout)
        except ConnectionError as exc:
            raise HandshakeFailed(str(exc) or "connection refused during handshake")
        if protocol.terminated is not None:
            raise HandshakeFailed(describe_close(protocol.terminated))
        for path in paths:
            stream_id = quic.get_next_available_stream_id()
            req = Request(path=path, stream_id=stream_id)
            if args.output_dir:
                name = os.path.basename(path) or "index.html"
                if n > len(urls):
                    name = f"{name}.{stream_id}"
                req.out = open(os.path.join(args.output_dir, name), "wb")
            protocol.requests[stream_id] = req
            quic.send_stream_data(stream_id, f"GET {path}\r\n".encode(), end_stream=True)
        protocol.transmit()
        remaining = args.timeout - (time.perf_counter() - start)
        await asyncio.wait_for(protocol.all_done.wait(), timeout=max(remaining, 0.1))
        end = time.perf_counter()
        if protocol.terminated is not None and not all(r.done for r in protocol.requests.values()):
            if 0x100 <= protocol.terminated.error_code <= 0x1FF:
                # a TLS alert after our Finished: the server refused our certificate
                raise HandshakeFailed(describe_close(protocol.terminated))
            raise ConnectionFailed(describe_close(protocol.terminated))
    except HandshakeFailed as exc:
        log(f"aioquic_hq: handshake failed: {exc}")
        report["error"] = f"handshake failed: {exc}"
        code = 2
    except ConnectionFailed as exc:
        log(f"aioquic_hq: connection failed: {exc}")
        report["error"] = f"connection failed: {exc}"
        code = 2
    except asyncio.TimeoutError:
        state = "handshake" if protocol.handshake_at is None else "transfer"
        log(f"aioquic_hq: timed out after {args.timeout} s during {state}")
        report["error"] = f"timeout during {state}"
        code = 4
    finally:
        for req in protocol.requests.values():
            if req.out is not None:
                req.out.close()
        protocol.close()
        try:
            await asyncio.wait_for(protocol.wait_closed(), timeout=2)
        except asyncio.TimeoutError:
            pass
        transport.close()

    if code == 0:
        bad = [r for r in protocol.requests.values() if r.error]
        if bad:
            for r in bad:
                log(f"aioquic_hq: {r.path}: {r.error}")
            report["error"] = bad[0].error
            code = 3
    reqs = list(protocol.requests.values())
    total = sum(r.size for r in reqs)
    report["requests"] = [
        {"path": r.path, "stream_id": r.stream_id, "bytes": r.size,
         "sha256": r.sha.hexdigest(), "done": r.done, "error": r.error} for r in reqs]
    report.update({
        "alpn": protocol.alpn, "cipher": protocol.cipher, "bytes": total,
        "key_updates_local": protocol.keys.local, "key_updates_remote": protocol.keys.remote,
        "key_update_at": protocol.key_update_at,
        "bytes_after_key_update": protocol.received_after_update,
    })
    if code == 0:
        seconds = end - start
        first = min((r.first_byte_at for r in reqs if r.first_byte_at), default=None)
        digest = (reqs[0].sha.hexdigest() if len(reqs) == 1 else
                  hashlib.sha256(b"".join(r.sha.digest() for r in reqs)).hexdigest())
        report.update({"ok": True, "seconds": seconds, "sha256": digest,
                       "handshake_s": (protocol.handshake_at or end) - start,
                       "ttfb_s": (first - start) if first else None,
                       "mbits": total * 8 / seconds / 1e6 if seconds > 0 else 0.0})
        if not args.quiet:
            for r in reqs:
                print(f"GET {r.path} stream {r.stream_id}: {r.size} bytes sha256 {r.sha.hexdigest()}")
        print(f"fetched {total} bytes sha256 {digest} in {seconds:.6f} s "
              f"({report['mbits']:.1f} Mbit/s)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return code


class HandshakeFailed(Exception):
    pass


class ConnectionFailed(Exception):
    pass


def describe_close(event: ConnectionTerminated) -> str:
    text = f"peer closed the connection: error {event.error_code:#x}"
    if 0x100 <= event.error_code <= 0x1FF:
        alert = event.error_code - 0x100
        try:
            name = tls.AlertDescription(alert).name
        except ValueError:
            name = str(alert)
        text += f" (TLS alert {name})"
    if event.reason_phrase:
        text += f": {event.reason_phrase}"
    return text


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="role", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--alpn", default=ALPN)
        sp.add_argument("--cert", help="our certificate (PEM)")
        sp.add_argument("--key", help="our private key (PEM)")
        sp.add_argument("--ca", help="CA certificate (PEM) that must sign the peer")
        sp.add_argument("--ciphers", default="all", help="'chacha20' or 'all'")
        sp.add_argument("--key-update", action="store_true",
                        help="initiate one key update mid-transfer")
        sp.add_argument("--key-update-after", type=int, default=1 << 20,
                        help="bytes transferred before the key update (server: at most half the file)")
        sp.add_argument("--window", type=int, default=16 << 20,
                        help="flow-control window per connection and stream")
        sp.add_argument("--max-datagram-size", type=int, default=1350)
        sp.add_argument("--idle-timeout", type=float, default=30.0)
        sp.add_argument("-q", "--quiet", action="store_true")

    s = sub.add_parser("server", help="serve files under --root over hq-interop")
    common(s)
    s.add_argument("--root", required=True)
    s.add_argument("--listen", default="[::1]:4433")

    c = sub.add_parser("client", help="fetch URLs over one connection, all streams in parallel")
    common(c)
    c.add_argument("urls", nargs="+", metavar="URL")
    c.add_argument("-n", type=int, default=0,
                   help="number of requests (URLs are cycled); default one per URL")
    c.add_argument("-o", "--output-dir", help="write each response into this directory")
    c.add_argument("--insecure", action="store_true", help="do not verify the server")
    c.add_argument("--server-name", help="TLS server name (default: URL host)")
    c.add_argument("--connect", help="send to this [addr]:port instead of the URL's (a relay)")
    c.add_argument("--timeout", type=float, default=60.0, help="overall deadline in seconds")
    c.add_argument("--json", help="write a JSON report here")

    args = p.parse_args(argv)
    if args.role == "server":
        return asyncio.run(run_server(args))
    return asyncio.run(run_client(args))


if __name__ == "__main__":
    sys.exit(main())
