#!/usr/bin/env python3
"""A user-space UDP relay on [::1] that drops and delays datagrams (netem stand-in).

    lossy_relay.py --listen '[::1]:0' --upstream '[::1]:4433' --loss 0.05 --seed 7 [--delay-ms 5]

Clients send to the relay's listen address; each client address gets its own upstream
socket (so the server sees one peer per client, and replies find their way back).
Each direction drops a fraction ``--loss`` of datagrams (or ``--loss-up`` / ``--loss-down``
separately), decided by a seeded PRNG per direction so a run can be repeated, and can
delay every forwarded datagram by a fixed ``--delay-ms``.

Prints ``relaying [::1]:PORT -> [::1]:UPSTREAM`` once ready; on SIGTERM/SIGINT prints
the counters (``stats up_fwd=.. up_drop=.. down_fwd=.. down_drop=..``) to stdout and
exits. IPv6 only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import socket
import sys


def parse_hostport(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return host, int(port)


class Direction:
    def __init__(self, loss: float, seed: int, delay: float) -> None:
        self.loss = loss
        self.rng = random.Random(seed)
        self.delay = delay
        self.forwarded = 0
        self.dropped = 0

    def admit(self) -> bool:
        if self.loss > 0 and self.rng.random() < self.loss:
            self.dropped += 1
            return False
        self.forwarded += 1
        return True


class Relay:
    def __init__(self, upstream: tuple[str, int], up: Direction, down: Direction) -> None:
        self.upstream = (upstream[0], upstream[1], 0, 0)
        self.up = up
        self.down = down
        self.front: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple, asyncio.DatagramTransport] = {}
        self.loop = asyncio.get_running_loop()

    def send_later(self, direction: Direction, send, data: bytes) -> None:  # type: ignore[no-untyped-def]
        if direction.delay > 0:
            self.loop.call_later(direction.delay, send, data)
        else:
            send(data)

    async def from_client(self, data: bytes, client: tuple) -> None:
        back = self.sessions.get(client)
        if back is None:
            relay = self

            class Back(asyncio.DatagramProtocol):
                def datagram_received(self, d: bytes, addr: tuple) -> None:
                    if relay.down.admit() and relay.front is not None:
                        relay.send_later(relay.down, lambda x: relay.front.sendto(x, client), d)

            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(("::1", 0, 0, 0))
            sock.connect(self.upstream)
            back, _ = await self.loop.create_datagram_endpoint(Back, sock=sock)
            self.sessions[client] = back
        if self.up.admit():
            self.send_later(self.up, back.sendto, data)


class Front(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.relay.front = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if addr in self.relay.sessions:
            if self.relay.up.admit():
                self.relay.send_later(self.relay.up, self.relay.sessions[addr].sendto, data)
        else:
            asyncio.ensure_future(self.relay.from_client(data, addr))


async def run(args: argparse.Namespace) -> int:
    loss_up = args.loss if args.loss_up is None else args.loss_up
    loss_down = args.loss if args.loss_down is None else args.loss_down
    delay = args.delay_ms / 1000.0
    relay = Relay(parse_hostport(args.upstream),
                  Direction(loss_up, args.seed, delay),
                  Direction(loss_down, args.seed + 1, delay))
    host, port = parse_hostport(args.listen)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, port, 0, 0))
    loop = asyncio.get_running_loop()
    front, _ = await loop.create_datagram_endpoint(lambda: Front(relay), sock=sock)
    name = sock.getsockname()
    print(f"relaying [{name[0]}]:{name[1]} -> [{relay.upstream[0]}]:{relay.upstream[1]} "
          f"loss up={loss_up} down={loss_down} delay={args.delay_ms}ms seed={args.seed}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"stats up_fwd={relay.up.forwarded} up_drop={relay.up.dropped} "
          f"down_fwd={relay.down.forwarded} down_drop={relay.down.dropped}", flush=True)
    front.close()
    for t in relay.sessions.values():
        t.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="[::1]:0")
    p.add_argument("--upstream", required=True, help="server address, e.g. '[::1]:4433'")
    p.add_argument("--loss", type=float, default=0.05, help="drop fraction in each direction")
    p.add_argument("--loss-up", type=float, help="drop fraction client -> server")
    p.add_argument("--loss-down", type=float, help="drop fraction server -> client")
    p.add_argument("--delay-ms", type=float, default=0.0, help="fixed one-way delay")
    p.add_argument("--seed", type=int, default=1)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
