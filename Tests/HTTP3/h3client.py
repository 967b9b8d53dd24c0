#!/usr/bin/env python3
"""A small HTTP/3 client on aioquic (a stack nobody here wrote), for the HTTP/3 tests.

    h3client.py --port N [--host ::1] [--authority stoq.test] REQUEST...

Each REQUEST is "METHOD PATH" optionally followed by "|name: value" header fields, e.g.
"GET /big.bin|range: bytes=10-99". All requests run concurrently on one connection.
Prints one JSON object per request, in the order given:
    {"status": 200, "headers": {...}, "length": N, "sha256": "...", "reset": null}
"reset" is the stream error code when the server reset the stream instead of ending it.
Exits 0 when every request got an answer (or a reset), 2 on a connection failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


class Exchange:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.hasher = hashlib.sha256()
        self.length = 0
        self.reset: int | None = None
        self.done = asyncio.get_event_loop().create_future()

    def result(self) -> dict:
        return {"status": self.status, "headers": self.headers, "length": self.length,
                "sha256": self.hasher.hexdigest(), "reset": self.reset}


class HeadAwareH3(H3Connection):
    """aioquic 1.7.2 holds every response's body to its Content-Length, even a HEAD response's or
    a 304's, which RFC 9110 (8.6, 15.4.5) lets carry the length of the body they omit. Its client
    does not track the request method, so this one skips that check on the streams it knows."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.bodiless: set[int] = set()

    def _check_content_length(self, stream) -> None:  # type: ignore[no-untyped-def]
        if stream.stream_id not in self.bodiless:
            super()._check_content_length(stream)


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.http = HeadAwareH3(self._quic)
        self.exchanges: dict[int, Exchange] = {}

    def request(self, method: str, authority: str, path: str, headers: list[tuple[str, str]]) -> Exchange:
        sid = self._quic.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                  (b":path", path.encode()), (b"user-agent", b"stoq-h3-test")]
        fields += [(k.lower().encode(), v.encode()) for k, v in headers]
        if method == "HEAD" or any(k.lower() == "if-none-match" for k, _ in headers):
            self.http.bodiless.add(sid)
        self.http.send_headers(stream_id=sid, headers=fields, end_stream=True)
        ex = Exchange()
        self.exchanges[sid] = ex
        self.transmit()
        return ex

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            print(f"h3client: connection closed: code {event.error_code:#x} {event.reason_phrase}", file=sys.stderr)
            for ex in self.exchanges.values():
                if not ex.done.done():
                    ex.done.set_exception(ConnectionError(f"connection closed: {event.reason_phrase}"))
        if isinstance(event, StreamReset) and event.stream_id in self.exchanges:
            ex = self.exchanges[event.stream_id]
            ex.reset = event.error_code
            if not ex.done.done():
                ex.done.set_result(None)
            return
        for h3 in self.http.handle_event(event):
            ex = self.exchanges.get(getattr(h3, "stream_id", -1))
            if ex is None:
                continue
            if isinstance(h3, HeadersReceived):
                for k, v in h3.headers:
                    if k == b":status":
                        ex.status = int(v)
                    else:
                        ex.headers[k.decode()] = v.decode()
            elif isinstance(h3, DataReceived):
                ex.hasher.update(h3.data)
                ex.length += len(h3.data)
            if getattr(h3, "stream_ended", False) and not ex.done.done():
                ex.done.set_result(None)


def parse(spec: str) -> tuple[str, str, list[tuple[str, str]]]:
    parts = spec.split("|")
    method, path = parts[0].split(" ", 1)
    headers = []
    for h in parts[1:]:
        k, v = h.split(":", 1)
        headers.append((k.strip(), v.strip()))
    return method, path, headers


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="::1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--authority", default="localhost")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("requests", nargs="+")
    args = ap.parse_args()
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                               server_name=args.authority)
    try:
        async with connect(args.host, args.port, configuration=config, create_protocol=Client,
                           wait_connected=True) as client:
            assert isinstance(client, Client)
            exchanges = [client.request(m, args.authority, p, h) for m, p, h in map(parse, args.requests)]
            try:
                await asyncio.wait_for(asyncio.gather(*(e.done for e in exchanges)), args.timeout)
            finally:
                for e in exchanges:
                    print(json.dumps(e.result() | {"complete": e.done.done()}), flush=True)
    except (ConnectionError, asyncio.TimeoutError, OSError) as e:
        print(f"h3client: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
