#!/usr/bin/env python3
"""Hostile HTTP/3 clients on raw aioquic QUIC (ALPN h3), for the HTTP/3 tests.

    h3hostile.py --port N SCENARIO

Scenarios:
  control-data    a control stream whose first frame is DATA (forbidden there)
  garbage-request random bytes (seeded) on 20 request streams
  unread          asks for a large file 20 times and never reads, then vanishes
  reset-request   sends a request and resets its stream at once, 50 times
  stop-reading    asks for a large file 20 times and sends STOP_SENDING on each after 0.3 s

Prints one JSON line: {"closed": bool, "error_code": int|null, "reason": str}
(how the server ended the connection, if it did within the scenario's time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent


class Raw(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event


def request_bytes(path: str) -> bytes:
    # A HEADERS frame with a QPACK field section using only static-table references and
    # literals without Huffman: prefix 00 00, then :method GET (static 17), :scheme https (23),
    # :path as a literal with name reference (static 1), :authority literal with name ref (0).
    def literal(index: int, value: bytes) -> bytes:
        assert index < 16 and len(value) < 127
        return bytes([0x50 | index, len(value)]) + value
    block = b"\x00\x00" + bytes([0xC0 | 17, 0xC0 | 23]) + literal(1, path.encode()) + literal(0, b"localhost")
    return bytes([0x01, len(block)]) + block


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="::1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("scenario")
    args = ap.parse_args()
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    if args.scenario == "unread":
        config.max_stream_data = 16384
        config.max_data = 65536
    async with connect(args.host, args.port, configuration=config, create_protocol=Raw) as c:
        assert isinstance(c, Raw)
        q = c._quic
        rng = random.Random(20261207)
        wait = 3.0
        if args.scenario == "control-data":
            sid = q.get_next_available_stream_id(is_unidirectional=True)
            q.send_stream_data(sid, b"\x00" + b"\x04\x00" + b"\x00\x03abc")  # type, SETTINGS (empty), DATA
        elif args.scenario == "garbage-request":
            for _ in range(20):
                sid = q.get_next_available_stream_id()
                q.send_stream_data(sid, rng.randbytes(rng.randrange(1, 200)), end_stream=True)
        elif args.scenario == "unread":
            # A tiny receive window: the server's writes back up on every stream.
            for _ in range(20):
                sid = q.get_next_available_stream_id()
                q.send_stream_data(sid, request_bytes("/5mb.bin"), end_stream=True)
            wait = 1.0
        elif args.scenario == "reset-request":
            for _ in range(50):
                sid = q.get_next_available_stream_id()
                q.send_stream_data(sid, request_bytes("/5mb.bin"))
                q.reset_stream(sid, 0x10C)
        elif args.scenario == "stop-reading":
            sids = []
            for _ in range(20):
                sid = q.get_next_available_stream_id()
                q.send_stream_data(sid, request_bytes("/5mb.bin"), end_stream=True)
                sids.append(sid)
            c.transmit()
            await asyncio.sleep(0.3)
            for sid in sids:
                q.stop_stream(sid, 0x10C)
        else:
            raise SystemExit(f"unknown scenario {args.scenario}")
        c.transmit()
        deadline = asyncio.get_event_loop().time() + wait
        while c.terminated is None and asyncio.get_event_loop().time() < deadline:
            await asyncio.sleep(0.05)
        t = c.terminated
        print(json.dumps({"closed": t is not None, "error_code": t.error_code if t else None,
                          "reason": t.reason_phrase if t else ""}), flush=True)
        if args.scenario == "unread":
            # Vanish without a CONNECTION_CLOSE: the server learns of it by its idle timeout.
            c._transport.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    asyncio.run(main())
