"""The WebSocket push over wss:// (a client written here from RFC 6455, on Python's ssl) and
hostile clients: none of them may stop the listener from serving the next honest request."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time

import pytest

from conftest import Server, start_server, stop_server


def tls_connect(server: Server, alpn: list[str] | None = None, timeout: float = 10) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(server.certs.ca))
    context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("::1", server.port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="stoq.test")


def read_until(sock: ssl.SSLSocket, marker: bytes, limit: int = 65536) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data


def recv_exact(sock: ssl.SSLSocket, n: int, buffered: bytearray) -> bytes:
    while len(buffered) < n:
        piece = sock.recv(4096)
        if not piece:
            raise ConnectionError("closed")
        buffered += piece
    out = bytes(buffered[:n])
    del buffered[:n]
    return out


def read_frame(sock: ssl.SSLSocket, buffered: bytearray) -> tuple[int, bytes]:
    b0, b1 = recv_exact(sock, 2, buffered)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", recv_exact(sock, 2, buffered))
    elif length == 127:
        (length,) = struct.unpack("!Q", recv_exact(sock, 8, buffered))
    assert not b1 & 0x80, "server frames are not masked"
    return b0 & 0x0F, recv_exact(sock, length, buffered)


def client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: stoq.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_websocket_receives_each_version_and_closes_cleanly(server: Server):
    with tls_connect(server, ["http/1.1"]) as sock:
        sock.sendall(UPGRADE.format(path="/ws/name/tick").encode())
        head = read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        buffered = bytearray(head.split(b"\r\n\r\n", 1)[1])
        messages = [read_frame(sock, buffered) for _ in range(3)]
        assert [op for op, _ in messages] == [1, 1, 1]
        assert [m for _, m in messages] == [f'{{"name":"tick","version":{v},"content":"c{v}"}}'.encode() for v in (1, 2, 3)]
        sock.sendall(client_frame(0x9, b"ping?"))
        assert read_frame(sock, buffered) == (0xA, b"ping?")
        sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
        assert read_frame(sock, buffered) == (0x8, struct.pack("!H", 1000))
        assert sock.recv(10) == b"", "the server ends the connection after the close handshake"


def test_websocket_for_an_unknown_name_is_404(server: Server):
    with tls_connect(server, ["http/1.1"]) as sock:
        sock.sendall(UPGRADE.format(path="/ws/name/nobody").encode())
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 404")


def honest_request_works(server: Server) -> None:
    with tls_connect(server, ["http/1.1"]) as sock:
        sock.sendall(b"GET /small.txt HTTP/1.1\r\nHost: stoq.test\r\nConnection: close\r\n\r\n")
        data = read_until(sock, b"hello over https")
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello over https\n"), data


def test_hostile_clients_never_stop_the_listener(server: Server):
    # Not TLS at all.
    with socket.create_connection(("::1", server.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(2000))
        try:
            raw.recv(100)
        except OSError:
            pass
    honest_request_works(server)
    # A header flood, a request line of garbage, an absurd Content-Length, a huge chunked body.
    hostile = [
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 70000 + b"\r\n\r\n",
        b"\x00\x01\x02 \xff\xfe HTTP/9.9\r\n\r\n",
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
        b"POST /small.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"10000\r\n" + b"z" * 65536 + b"\r\n" + b"10000\r\n" + b"z" * 65536 + b"\r\n",
    ]
    for payload in hostile:
        with tls_connect(server, ["http/1.1"]) as sock:
            try:
                sock.sendall(payload)
                answer = read_until(sock, b"\r\n\r\n")
            except OSError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 200"), (payload[:40], answer[:80])
    # HTTP/2 garbage after the preface.
    with tls_connect(server, ["h2"]) as sock:
        try:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(5000))
            sock.recv(1000)
        except OSError:
            pass
    honest_request_works(server)


def test_connections_beyond_the_bound_are_closed(binary, certs, site, tmp_path):
    bounded = start_server(binary, certs, site, tmp_path, "--max-connections", "3")
    try:
        held = [tls_connect(bounded, ["http/1.1"]) for _ in range(3)]
        for sock in held:
            sock.sendall(b"GET /small.txt HTTP/1.1\r\nHost: stoq.test\r\n\r\n")
            assert read_until(sock, b"hello over https").startswith(b"HTTP/1.1 200")
        try:
            extra = tls_connect(bounded, ["http/1.1"], timeout=10)
            extra.sendall(b"GET /small.txt HTTP/1.1\r\nHost: stoq.test\r\n\r\n")
            assert extra.recv(100) == b""
        except (OSError, ssl.SSLError):
            pass  # closed during the handshake: refused, as it should be
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                honest_request_works(bounded)
                break
            except (OSError, AssertionError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        stop_server(bounded)


def test_an_idle_connection_is_closed(binary, certs, site, tmp_path):
    quick = start_server(binary, certs, site, tmp_path, "--idle-seconds", "1")
    try:
        with tls_connect(quick, ["h2"], timeout=20) as sock:
            started = time.monotonic()
            assert sock.recv(100000) is not None  # the server's SETTINGS
            while sock.recv(100000):
                pass
            assert time.monotonic() - started < 20
    finally:
        stop_server(quick)
