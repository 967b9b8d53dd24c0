#!/usr/bin/env python3
"""Opens N QUIC connections to one server with aioquic and holds them idle.

    idle_conns.py --port 4433 --alpn hq-interop --ca ca.pem -n 1000 [--concurrency 32]

Each connection completes its handshake (verifying the server against --ca) and is then
kept alive with a PING every --keepalive seconds. When all are up it prints

    established N connections in S s (R handshakes/s)

and holds them until stdin closes (or SIGTERM), then closes them. The caller measures the
server's memory while they are held (memory per idle connection). The handshake rate is
bounded by this Python client, not by the server: it is a lower bound for the server.
Each connection has its own UDP socket on [::1] (IPv6 only).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import ssl
import sys
import time

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection


async def open_one(loop: asyncio.AbstractEventLoop, args: argparse.Namespace) -> tuple:
    config = QuicConfiguration(is_client=True, alpn_protocols=[args.alpn], idle_timeout=120.0,
                               server_name="::1")
    if args.ca:
        config.load_verify_locations(cafile=args.ca)
    else:
        config.verify_mode = ssl.CERT_NONE
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::1", 0, 0, 0))
    quic = QuicConnection(configuration=config)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(quic), sock=sock)
    protocol.connect(("::1", args.port, 0, 0))
    await asyncio.wait_for(protocol.wait_connected(), timeout=30)
    return transport, protocol


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    conns: list[tuple] = []
    failures = 0
    sem = asyncio.Semaphore(args.concurrency)

    async def one() -> None:
        nonlocal failures
        async with sem:
            try:
                conns.append(await open_one(loop, args))
            except Exception as exc:  # noqa: BLE001 — counted and reported
                failures += 1
                if failures <= 3:
                    print(f"connection failed: {exc!r}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(args.n)))
    secs = time.perf_counter() - start
    print(f"established {len(conns)} connections in {secs:.3f} s "
          f"({len(conns) / secs:.1f} handshakes/s) failed {failures}", flush=True)

    async def keepalive() -> None:
        while True:
            await asyncio.sleep(args.keepalive)
            for _, protocol in conns:
                protocol._quic.send_ping(0)
                protocol.transmit()

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    ka = asyncio.ensure_future(keepalive())
    await stop.wait()
    ka.cancel()
    for transport, protocol in conns:
        protocol.close()
    await asyncio.sleep(0.2)
    for transport, _ in conns:
        transport.close()
    return 0 if conns else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--alpn", default="hq-interop")
    p.add_argument("--ca")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--keepalive", type=float, default=10.0)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
