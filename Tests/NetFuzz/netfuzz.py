#!/usr/bin/env python3
"""A hostile stoq/1 peer: attacks a running `stoq node` process over real QUIC (aioquic) and checks
that it survives.

    netfuzz.py --stoq PATH/TO/stoq --seed 1 --seconds 60

It makes a network (CA, the node's certificate, the fuzzer's certificate, and a foreign CA with its
own certificate), puts content into an origin's store and starts two nodes: the origin with every
role that answers requests (origin, relay, storage for HyperMesh, and the Nexus DHT) and an edge
below it (fills its misses from the origin, passes names on). When `unshare -rn` works,
the node and the fuzzer run in a network namespace of their own (only `lo`), so nothing the node is
tricked into dialling leaves the namespace; otherwise the node runs without the relay role and the
DHT, and every address the fuzzer names is loopback.

Each round opens several connections at once (most with the network's certificate, some with a
foreign one or none) and, on each, many streams carrying seeded random, extreme-valued, mutated
and truncated frames of every type in docs/PROTOCOL.md, sent whole, split at every byte, left
open, or reset; some connections are dropped without a CONNECTION_CLOSE. Between rounds a
legitimate client must get a PONG that echoes its nonce and the bytes of a chunk that hash to its
id. RSS is sampled from /proc/PID/status all along.

Pass: no node exits, each answers every check, and each one's RSS comes back to within 20 % of its
baseline (taken after a warm-up round) within --settle seconds after the attack. Statistics are
printed at the end (and written as JSON with --json). The same --seed sends the same frames.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import stoq_frames as sf  # noqa: E402

from aioquic.asyncio import connect  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset  # noqa: E402

# --------------------------------------------------------------------------- QUIC client


class Stream:
    __slots__ = ("data", "done", "reset")

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = asyncio.Event()
        self.reset: int | None = None


class FuzzProtocol(QuicConnectionProtocol):
    """Collects each stream's answer; a stream is done at FIN, reset, or connection end."""

    def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.streams: dict[int, Stream] = {}
        self.closed: ConnectionTerminated | None = None

    def quic_event_received(self, event) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, StreamDataReceived):
            s = self.streams.setdefault(event.stream_id, Stream())
            if len(s.data) < 1 << 20:
                s.data += event.data
            if event.end_stream:
                s.done.set()
        elif isinstance(event, StreamReset):
            s = self.streams.setdefault(event.stream_id, Stream())
            s.reset = event.error_code
            s.done.set()
        elif isinstance(event, ConnectionTerminated):
            self.closed = event
            for s in self.streams.values():
                s.done.set()

    def open(self) -> tuple[int, Stream]:
        sid = self._quic.get_next_available_stream_id()
        s = Stream()
        self.streams[sid] = s
        return sid, s

    def send(self, sid: int, data: bytes, fin: bool) -> None:
        self._quic.send_stream_data(sid, data, end_stream=fin)
        self.transmit()

    def reset_stream(self, sid: int, code: int) -> None:
        self._quic.reset_stream(sid, code)
        self.transmit()

    def drop(self) -> None:
        """Vanish without a CONNECTION_CLOSE (the node learns it only by its idle timeout)."""
        if self._transport is not None:
            self._transport.close()


def client_config(cert: Path | None, key: Path | None) -> QuicConfiguration:
    c = QuicConfiguration(is_client=True, alpn_protocols=["stoq/1"], idle_timeout=20.0)
    c.verify_mode = ssl.CERT_NONE  # a hostile peer does not care who the node is
    c.server_name = "localhost"
    if cert is not None:
        c.load_cert_chain(str(cert), str(key))
    return c


def request_delivered(proto: FuzzProtocol, sid: int) -> bool:
    """Whether the node acknowledged every byte of stream `sid`'s request and its FIN (aioquic
    internals, read only; False when they cannot be read)."""
    try:
        sender = proto._quic._streams[sid].sender
        return bool(sender.is_finished or (sender._acked_fin and sender._buffer_start == sender._buffer_fin))
    except (AttributeError, KeyError):
        return False


def udp_receive_buffer_drops() -> int:
    """Udp6RcvbufErrors of this network namespace (/proc/net/snmp6): datagrams dropped because a
    socket's receive buffer was full (the node's or the fuzzer's)."""
    try:
        with open("/proc/net/snmp6") as f:
            for line in f:
                if line.startswith("Udp6RcvbufErrors"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Frames at the start of an answer (a chunk's raw bytes after the header are not frames)."""
    out = []
    i = 0
    while i < len(data) and len(out) < 64:
        try:
            t, i2 = read_varint(data, i)
            n, i3 = read_varint(data, i2)
        except IndexError:
            break
        if i3 + n > len(data):
            break
        out.append((t, data[i3 : i3 + n]))
        i = i3 + n
        if t == 0x07:  # CHUNK_HEADER: raw bytes follow
            break
    return out


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    first = data[i]
    n = 1 << (first >> 6)
    if i + n > len(data):
        raise IndexError
    v = first & 0x3F
    for b in data[i + 1 : i + n]:
        v = (v << 8) | b
    return v, i + n


# --------------------------------------------------------------------------- statistics


class Stats:
    def __init__(self) -> None:
        self.executions = 0                      # frames (or frame sequences) sent on a stream
        self.connections = collections.Counter()  # attempted / established / refused / dropped
        self.streams = 0
        self.frames = collections.Counter()       # by generator name
        self.modes = collections.Counter()        # whole, mutated, truncated, split, open, reset, ...
        self.answers = collections.Counter()      # answer kinds: frame type, reset code, none
        self.errors = collections.Counter()       # ERROR codes and reset codes seen
        self.unanswered = collections.Counter()   # generator/mode of streams never answered (answer timeout + grace)
        self.late = collections.Counter()         # answered after the answer timeout, by why it was late
        self.udp_drops = 0                        # datagrams the kernel dropped for a full receive buffer
        self.checks = 0
        self.check_failures = 0
        self.rss: dict[str, dict[str, int]] = {}   # node -> baseline / peak / after, KiB
        self.rss_samples = 0
        self.rounds = 0
        self.bytes_sent = 0

    def as_dict(self) -> dict:
        return {
            "rounds": self.rounds, "executions": self.executions, "streams": self.streams,
            "connections": dict(self.connections), "bytes_sent": self.bytes_sent,
            "frames_by_type": dict(sorted(self.frames.items())), "modes": dict(sorted(self.modes.items())),
            "answers": dict(self.answers.most_common()), "errors_seen": dict(self.errors.most_common()),
            "unanswered": dict(self.unanswered.most_common()), "answered_late": dict(self.late.most_common()),
            "udp_receive_buffer_drops": self.udp_drops,
            "health_checks": self.checks, "health_check_failures": self.check_failures,
            "rss_kib": self.rss,
        }


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- the network and the node


def run(cmd: list[str], **kw) -> str:  # type: ignore[no-untyped-def]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)
    if r.returncode != 0:
        raise SystemExit(f"netfuzz: {' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def base32_id(cid: str) -> bytes:
    text = cid.removeprefix("stoq:").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


class Network:
    """Certificates (the network's CA, the nodes', the fuzzer's and a checker's; a foreign CA's) and
    the content the origin serves."""

    def __init__(self, stoq: str, work: Path, rng: random.Random) -> None:
        self.stoq = stoq
        self.work = work
        certs = work / "certs"
        run([stoq, "certs", "init-ca", "--out", certs / "ca"])
        run([stoq, "certs", "init-ca", "--out", certs / "foreign"])
        for name in ("origin", "edge", "fuzzer", "checker"):
            run([stoq, "certs", "issue", "--ca", certs / "ca", "--name", name, "--ip", "::1", "--dns", "localhost", "--out", certs])
        run([stoq, "certs", "issue", "--ca", certs / "foreign", "--name", "stranger", "--out", certs / "foreign"])
        self.certs = certs
        self.ca = certs / "ca" / "ca.pem"
        self.fuzzer = (certs / "fuzzer.pem", certs / "fuzzer.key")
        self.checker = (certs / "checker.pem", certs / "checker.key")
        self.stranger = (certs / "foreign" / "stranger.pem", certs / "foreign" / "stranger.key")
        data = work / "data"
        data.mkdir()
        (data / "a.bin").write_bytes(sf.rand_bytes(rng, 300_000))
        (data / "b.txt").write_bytes(b"netfuzz\n" * 100)
        self.origin_store = work / "origin-store"
        # Chunk files (not packs, the default): their names are the chunk ids the fuzzer asks for.
        out = run([stoq, "put", data, "--store", self.origin_store, "--store-format", "files"])
        cid = next(w for w in out.split() if w.startswith("stoq:"))
        self.content_id = base32_id(cid)
        self.chunk_ids = []
        for f in sorted((self.origin_store / "chunks").rglob("*")):
            if f.is_file() and len(f.name) == 64 and len(self.chunk_ids) < 64:
                try:
                    self.chunk_ids.append(bytes.fromhex(f.name))
                except ValueError:
                    pass


class Node:
    """One `stoq node` process."""

    def __init__(self, net: Network, name: str, roles: list[str], store: Path, extra: list[str]) -> None:
        self.name = name
        self.port = free_udp_port()
        cmd = [net.stoq, "node", "--name", name, "--listen", f"[::1]:{self.port}", "--cert", net.certs / f"{name}.pem",
               "--key", net.certs / f"{name}.key", "--ca", net.ca, "--store", store, "--log-level", "warning"]
        for r in roles:
            cmd += ["--role", r]
        self.cmd = [str(c) for c in cmd + extra]
        self.log_path = net.work / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True)
        self.ready_line = ""
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready "):
                self.ready_line = line.strip()
                break
        if not self.ready_line:
            self.stop()
            raise SystemExit(f"netfuzz: the {name} node did not start ({self.proc.returncode}); see {self.log_path}")
        # Keep draining stdout so the node never blocks on a full pipe.
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_nodes(net: Network, isolated: bool, edge: bool) -> list[Node]:
    """The origin with every role that answers requests, and an edge below it."""
    roles = ["origin", "storage", "issuer"] + (["relay"] if isolated else [])
    # The fuzzer operates the origin (STATUS and PURGE are closed to other certificates, issue 15)
    # and the relay carries for every certificate, so the fuzz reaches past the access checks.
    access = ["--operator", str(net.certs / "fuzzer.pem")] + (["--relay-open"] if isolated else [])
    nodes = [Node(net, "origin", roles, net.origin_store, ["--ca-dir", str(net.certs / "ca")] + access + (["--dht"] if isolated else []))]
    if edge:
        try:
            nodes.append(Node(net, "edge", ["edge"], net.work / "edge-store",
                              ["--upstream", f"[::1]:{nodes[0].port}", "--cache-bytes", str(8 << 20)]))
        except SystemExit:
            nodes[0].stop()
            raise
    return nodes


# --------------------------------------------------------------------------- attack


class Fuzzer:
    def __init__(self, net: Network, nodes: list[Node], isolated: bool, args: argparse.Namespace) -> None:
        self.net = net
        self.nodes = nodes
        self.isolated = isolated
        self.args = args
        self.stats = Stats()
        my_id = sf.spki_sha256(net.fuzzer[0].read_bytes())
        self.ctx = sf.Ctx(content_id=net.content_id, chunk_ids=net.chunk_ids, my_node_id=my_id, node_port=nodes[0].port,
                          isolated=isolated)
        skip = {n.strip() for n in (args.skip or "").split(",") if n.strip()}
        unknown = skip - set(sf.GENERATORS)
        if unknown:
            raise SystemExit(f"netfuzz: --skip names unknown frame generators {sorted(unknown)}; known: {', '.join(sf.GENERATORS)}")
        self.generators = [(n, g) for n, g in sf.GENERATORS.items() if n not in skip]
        self.failures: list[str] = []

    # ---- one request

    def make(self, rng: random.Random) -> tuple[str, str, list[bytes], bool]:
        """(generator, mode, pieces to write, fin)."""
        name, gen = rng.choice(self.generators)
        ftype, payload, extra = gen(rng, self.ctx)
        whole = sf.frame(ftype, payload) + extra
        mode = rng.choices(["whole", "mutated", "truncated", "lying-length", "split", "two-frames", "open", "reset", "junk"],
                           weights=[30, 20, 8, 6, 6, 5, 8, 8, 4])[0]
        fin = True
        if mode == "mutated":
            # In the shared network (no namespace of its own) a mutation could turn a loopback
            # address into a real one: frames that make the node dial are only sent whole there.
            if not self.isolated and ftype in (0x12, 0x40):
                mode = "whole"
            else:
                whole = sf.mutate(rng, whole)
        if mode == "truncated":
            whole = whole[: rng.randrange(max(1, len(whole)))]
        elif mode == "lying-length":
            declared = rng.choice([len(payload) + 1, len(payload) + 1000, 4097, 2049, 65537, 1 << 20, sf.VARINT_MAX, max(0, len(payload) - 1)])
            whole = sf.varint(ftype) + sf.varint(declared) + payload + extra
        elif mode == "two-frames":
            t2, p2, _ = rng.choice(self.generators)[1](rng, self.ctx)
            whole = whole + sf.frame(t2, p2)
        elif mode == "junk":
            whole = sf.rand_bytes(rng, rng.choice([1, 2, 7, 100, 3000]))
        elif mode in ("open", "reset"):
            fin = False
            whole = whole[: rng.randrange(len(whole) + 1)] if rng.random() < 0.5 else whole
        if mode == "split":
            pieces = [whole[i : i + 1] for i in range(min(len(whole), 600))] + ([whole[600:]] if len(whole) > 600 else [])
        elif len(whole) > 1 and rng.random() < 0.15:
            cut = rng.randrange(1, len(whole))
            pieces = [whole[:cut], whole[cut:]]
        else:
            pieces = [whole]
        return name, mode, pieces, fin

    async def attack_stream(self, proto: FuzzProtocol, rng: random.Random) -> None:
        name, mode, pieces, fin = self.make(rng)
        if proto.closed is not None:
            return
        try:
            sid, s = proto.open()
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                proto.send(sid, piece, fin and last)
                self.stats.bytes_sent += len(piece)
                if len(pieces) > 2 and i % 50 == 49:
                    await asyncio.sleep(0)  # let the packets out between the bytes
            if not pieces:
                proto.send(sid, b"", fin)
        except Exception as e:  # the connection went away under us (aioquic raises plain errors)
            self.stats.answers[f"send failed: {type(e).__name__}"] += 1
            return
        self.stats.executions += 1
        self.stats.streams += 1
        self.stats.frames[name] += 1
        self.stats.modes[mode] += 1
        if mode == "reset":
            await asyncio.sleep(rng.choice([0, 0.01, 0.2]))
            try:
                proto.reset_stream(sid, rng.choice([0, 1, 2, 0x3FFF, sf.VARINT_MAX]))
            except Exception:
                pass
            self.stats.answers["(we reset)"] += 1
            return
        if mode == "open":
            self.stats.answers["(left open)"] += 1
            return
        try:
            await asyncio.wait_for(s.done.wait(), timeout=self.args.answer_timeout)
        except asyncio.TimeoutError:
            # The clock ran from the moment the request was queued in aioquic, not from when the
            # node had it: under load the fuzzer's own send queue (a pure-Python QUIC stack sending
            # MBs on a few hundred streams) and datagrams the kernel dropped at a full receive
            # buffer (retransmitted after a PTO) delay the request itself. So wait a grace period
            # more, and tell a late answer (and whether the node had the whole request at the
            # timeout) from none at all: only "no answer" means a node left a stream hanging.
            delivered = request_delivered(proto, sid)
            try:
                await asyncio.wait_for(s.done.wait(), timeout=self.args.answer_timeout)
            except asyncio.TimeoutError:
                self.stats.answers["no answer"] += 1
                self.stats.unanswered[f"{name}/{mode}"] += 1
                return
            why = "request delivered, answer late" if delivered else "request not yet delivered at the timeout"
            self.stats.late[why] += 1  # and the answer is counted below by its kind
        if s.reset is not None:
            self.stats.answers[f"reset {s.reset:#x}"] += 1
            self.stats.errors[f"reset {s.reset:#x}"] += 1
            return
        frames = parse_frames(bytes(s.data))
        if not frames:
            if not s.data and proto.closed is not None:
                # The connection ended first (a refused certificate, or the node closed it): not a FIN.
                self.stats.answers[f"connection closed ({proto.closed.error_code:#x})"] += 1
                return
            self.stats.answers["empty (FIN)" if not s.data else "unparsed bytes"] += 1
            return
        t, p = frames[-1] if frames[0][0] == 0x0C else frames[0]
        self.stats.answers[f"{t:#04x}"] += 1
        if t in (0x09, 0x7F, 0xBF):
            code = ""
            if t == 0x09 and p:
                try:
                    code = f" code {read_varint(p, 0)[0]}"
                except IndexError:
                    pass
            elif t == 0xBF and len(p) >= 2:
                code = f" code {int.from_bytes(p[:2], 'big')}"
            self.stats.errors[f"ERROR {t:#04x}{code}"] += 1

    async def attack_connection(self, rng: random.Random, streams: int) -> None:
        kind = rng.choices(["network", "foreign", "none"], weights=[80, 10, 10])[0]
        cert = {"network": self.net.fuzzer, "foreign": self.net.stranger, "none": (None, None)}[kind]
        target = self.nodes[0] if len(self.nodes) == 1 or rng.random() < 0.7 else rng.choice(self.nodes[1:])
        self.stats.connections[f"to {target.name}"] += 1
        self.stats.connections["attempted"] += 1
        self.stats.connections[f"attempted ({kind} certificate)"] += 1
        config = client_config(*cert)
        try:
            async with asyncio.timeout(self.args.answer_timeout * 3 + streams * 0.2):
                async with connect("::1", target.port, configuration=config, create_protocol=FuzzProtocol,
                                   wait_connected=True) as proto:
                    assert isinstance(proto, FuzzProtocol)
                    await asyncio.sleep(0.05)  # the node may refuse us right after the handshake
                    if proto.closed is not None:
                        self.stats.connections[f"refused ({kind} certificate)"] += 1
                        return
                    self.stats.connections["established"] += 1
                    tasks = []
                    for _ in range(streams):
                        tasks.append(asyncio.create_task(self.attack_stream(proto, random.Random(rng.getrandbits(64)))))
                        if rng.random() < 0.3:
                            await asyncio.sleep(0)
                    await asyncio.gather(*tasks, return_exceptions=True)
                    if proto.closed is not None and kind != "network":
                        self.stats.connections[f"refused ({kind} certificate)"] += 1
                    if rng.random() < 0.15:
                        proto.drop()
                        self.stats.connections["dropped without CLOSE"] += 1
                        return
                    proto.close(error_code=rng.choice([0, 0, 1, 0x100]))
        except (ConnectionError, asyncio.TimeoutError, OSError) as e:
            self.stats.connections[f"failed ({kind} certificate): {type(e).__name__}"] += 1
        except Exception as e:  # aioquic surfaces TLS refusals in several ways
            self.stats.connections[f"failed ({kind} certificate): {type(e).__name__}"] += 1

    async def round(self, index: int) -> None:
        rng = random.Random(f"{self.args.seed}:{index}")
        conns = self.args.connections
        await asyncio.gather(*(self.attack_connection(random.Random(rng.getrandbits(64)), self.args.streams)
                               for _ in range(conns)), return_exceptions=True)
        self.stats.rounds += 1

    # ---- legitimate client

    async def check(self) -> str | None:
        """Every node must answer a legitimate client's PING and GET_CHUNK."""
        for node in self.nodes:
            if (err := await self.check_node(node)) is not None:
                return f"{node.name}: {err}"
        return None

    async def check_node(self, node: Node) -> str | None:
        """A PING must come back as a PONG with its nonce, and GET_CHUNK as the chunk's bytes."""
        self.stats.checks += 1
        last = "no attempt"
        for attempt in range(3):
            try:
                async with asyncio.timeout(self.args.check_timeout):
                    async with connect("::1", node.port, configuration=client_config(*self.net.checker),
                                       create_protocol=FuzzProtocol, wait_connected=True) as proto:
                        assert isinstance(proto, FuzzProtocol)
                        nonce = random.getrandbits(64)
                        sid, s = proto.open()
                        proto.send(sid, sf.frame(0x02, sf.u64(nonce) + sf.varint(0)), True)
                        await s.done.wait()
                        frames = parse_frames(bytes(s.data))
                        if not frames or frames[0][0] != 0x03 or frames[0][1][:8] != sf.u64(nonce):
                            last = f"PING answered with {bytes(s.data[:40]).hex()} (reset {s.reset})"
                            continue
                        sid, s = proto.open()
                        chunk = self.net.content_id
                        proto.send(sid, sf.frame(0x06, chunk + sf.varint(0) + sf.varint(0)), True)
                        await s.done.wait()
                        data = bytes(s.data)
                        frames = parse_frames(data)
                        if not frames or frames[-1][0] != 0x07:
                            last = f"GET_CHUNK answered with {data[:40].hex()} (reset {s.reset})"
                            continue
                        # header: type, length, payload; the body follows it
                        t, i = read_varint(data, 0)
                        while t == 0x0C:  # CHUNK_PENDING frames first
                            n, i = read_varint(data, i)
                            t, i = read_varint(data, i + n)
                        n, i = read_varint(data, i)
                        body = data[i + n :]
                        if hashlib.sha256(body).digest() != chunk:
                            last = f"GET_CHUNK returned {len(body)} bytes that do not hash to the chunk id"
                            continue
                        proto.close()
                        return None
            except Exception as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(1)
        self.stats.check_failures += 1
        return last

    # ---- RSS

    async def sample_rss(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for n in self.nodes:
                self.stats.rss[n.name]["peak"] = max(self.stats.rss[n.name]["peak"], rss_kib(n.pid))
            self.stats.rss_samples += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except asyncio.TimeoutError:
                pass

    async def settle(self, limit: float, within: float) -> None:
        """Waits (at most `limit` s) for every node's RSS to come within `within` of its baseline."""
        deadline = time.monotonic() + limit
        while True:
            for n in self.nodes:
                self.stats.rss[n.name]["after"] = rss_kib(n.pid)
            if all(r["after"] <= r["baseline"] * (1 + within) for r in self.stats.rss.values()) or time.monotonic() > deadline:
                return
            await asyncio.sleep(1)

    # ---- the whole run

    async def main(self) -> int:
        a = self.args
        for n in self.nodes:
            print(f"netfuzz: {n.name} pid {n.pid}: {n.ready_line}", flush=True)
        print(f"netfuzz: seed {a.seed}, {a.seconds:.0f} s of attack; "
              f"{'own network namespace' if self.isolated else 'shared loopback (no relay/DHT roles)'}", flush=True)
        # Warm-up: legitimate requests and one small round of every frame type, then the baseline.
        if (err := await self.check()) is not None:
            self.failures.append(f"the node did not answer before the attack: {err}")
            return 1
        saved = (a.connections, a.streams)
        a.connections, a.streams = 2, 40
        await self.round(-1)
        a.connections, a.streams = saved
        if dead := self.dead():
            self.failures.append(f"{dead} during the warm-up round (seed {a.seed})")
            return 1
        if (err := await self.check()) is not None:
            self.failures.append(f"after the warm-up round (seed {a.seed}) the node failed a legitimate request: {err}")
            return 1
        await asyncio.sleep(a.warmup_settle)
        for n in self.nodes:
            base = max(rss_kib(n.pid), 1)
            self.stats.rss[n.name] = {"baseline": base, "peak": base, "after": 0}
        print("netfuzz: baseline RSS after warm-up: " + ", ".join(f"{k} {v['baseline']} KiB" for k, v in self.stats.rss.items()), flush=True)
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sample_rss(stop))
        drops = udp_receive_buffer_drops()
        start = time.monotonic()
        index = 0
        while time.monotonic() - start < a.seconds:
            await self.round(index)
            index += 1
            if dead := self.dead():
                self.failures.append(f"{dead} during round {index - 1} (seed {a.seed})")
                break
            if (err := await self.check()) is not None:
                self.failures.append(f"after round {index - 1} (seed {a.seed}) the node failed a legitimate request: {err}")
                break
            if a.verbose:
                print(f"  round {index - 1}: {self.stats.executions} executions, RSS "
                      + ", ".join(f"{n.name} {rss_kib(n.pid)} KiB" for n in self.nodes), flush=True)
        stop.set()
        await sampler
        self.stats.udp_drops = udp_receive_buffer_drops() - drops
        if not self.failures and (dead := self.dead()):
            self.failures.append(dead)
        if not self.failures:
            await self.settle(a.settle, a.rss_tolerance)
            if (err := await self.check()) is not None:
                self.failures.append(f"after the attack a node failed a legitimate request: {err}")
            for name, r in self.stats.rss.items():
                if r["after"] > r["baseline"] * (1 + a.rss_tolerance):
                    self.failures.append(
                        f"{name}'s RSS stayed at {r['after']} KiB, {100 * (r['after'] / r['baseline'] - 1):.0f} % above its "
                        f"{r['baseline']} KiB baseline {a.settle:.0f} s after the attack (limit {100 * a.rss_tolerance:.0f} %)")
        return 1 if self.failures else 0

    def dead(self) -> str | None:
        for n in self.nodes:
            if not n.alive():
                return f"the {n.name} node exited with {n.proc.returncode}"
        return None


def report(f: Fuzzer, elapsed: float) -> None:
    s = f.stats
    print(f"netfuzz statistics (seed {f.args.seed}, {elapsed:.0f} s):")
    print(f"  rounds {s.rounds}, executions {s.executions}, streams {s.streams}, bytes sent {s.bytes_sent}")
    print("  connections: " + ", ".join(f"{k} {v}" for k, v in sorted(s.connections.items())))
    print("  frames by type: " + ", ".join(f"{k} {v}" for k, v in sorted(s.frames.items())))
    print("  modes: " + ", ".join(f"{k} {v}" for k, v in sorted(s.modes.items())))
    print("  answers: " + ", ".join(f"{k} {v}" for k, v in s.answers.most_common()))
    print("  errors seen: " + ", ".join(f"{k} {v}" for k, v in s.errors.most_common()))
    if s.unanswered:
        print("  no answer (frame/mode): " + ", ".join(f"{k} {v}" for k, v in s.unanswered.most_common(12)))
    if s.late:
        print(f"  answered after the {f.args.answer_timeout:.0f} s timeout: " + ", ".join(f"{k} {v}" for k, v in s.late.most_common()))
    print(f"  datagrams dropped at a full UDP receive buffer during the attack: {s.udp_drops}")
    print(f"  health checks {s.checks}, failed {s.check_failures}")
    for name, r in s.rss.items():
        pct = lambda v: f"{100 * (v / r['baseline'] - 1):+.0f} %" if r["baseline"] and v else "-"  # noqa: E731
        print(f"  RSS of {name} (KiB): before {r['baseline']}, peak during {r['peak']} ({pct(r['peak'])}), after {r['after']} ({pct(r['after'])})")


def in_own_namespace() -> bool:
    return os.environ.get("NETFUZZ_NETNS") == "1"


def reexec_in_namespace(argv: list[str]) -> int | None:
    """Runs this script again inside `unshare -rn` (a user and network namespace with only lo)."""
    if in_own_namespace() or os.environ.get("NETFUZZ_NO_NETNS") == "1" or shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=20)
    if probe.returncode != 0:
        return None
    env = dict(os.environ, NETFUZZ_NETNS="1")
    return subprocess.call(["unshare", "-rn", sys.executable, *argv], env=env)


def bring_lo_up() -> None:
    # Without iproute2 in the namespace, lo is still down: up it with an ioctl.
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stoq", default=os.environ.get("STOQ_BIN"), help="the stoq binary (default: $STOQ_BIN)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("NETFUZZ_SECONDS", 60)))
    p.add_argument("--connections", type=int, default=6, help="connections at once per round")
    p.add_argument("--streams", type=int, default=60, help="streams per connection")
    p.add_argument("--answer-timeout", type=float, default=5.0, help="seconds to wait for an answer to a fuzz stream; a later answer (within as long again) counts as late, none as unanswered")
    p.add_argument("--check-timeout", type=float, default=15.0, help="seconds a legitimate PING + GET_CHUNK may take")
    p.add_argument("--settle", type=float, default=90.0, help="seconds the node gets for its RSS to come back")
    p.add_argument("--warmup-settle", type=float, default=3.0)
    p.add_argument("--rss-tolerance", type=float, default=0.20)
    p.add_argument("--skip", help="comma-separated frame generators to leave out (e.g. NAME_PUBLISH, to look past a known bug)")
    p.add_argument("--no-edge", action="store_true", help="attack the origin alone (no edge below it)")
    p.add_argument("--json", help="write the statistics here as JSON")
    p.add_argument("--keep", help="keep the work directory here (certificates, store, node log)")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    if not a.stoq or not os.access(a.stoq, os.X_OK):
        print("netfuzz: pass --stoq PATH or set STOQ_BIN to the stoq binary", file=sys.stderr)
        return 2
    a.stoq = os.path.abspath(a.stoq)
    code = reexec_in_namespace(sys.argv)
    if code is not None:
        return code
    if in_own_namespace():
        try:
            bring_lo_up()
        except OSError:
            pass
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="netfuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    async def go() -> int:
        def quiet(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            # aioquic leaves the handshake future of a refused connection unretrieved: not news.
            if isinstance(context.get("exception"), (ConnectionError, asyncio.CancelledError)):
                return
            loop.default_exception_handler(context)

        asyncio.get_running_loop().set_exception_handler(quiet)
        isolated = in_own_namespace()
        net = Network(a.stoq, work, random.Random(a.seed))
        nodes = start_nodes(net, isolated, edge=not a.no_edge)
        f = Fuzzer(net, nodes, isolated, a)
        try:
            code = await f.main()
        finally:
            alive = all(n.alive() for n in nodes)
            for n in nodes:
                n.stop()
            report(f, time.monotonic() - started)
            if a.json:
                Path(a.json).write_text(json.dumps(dict(f.stats.as_dict(), seed=a.seed, failures=f.failures), indent=2))
        for failure in f.failures:
            print(f"FAIL: {failure}")
        if f.failures:
            for n in nodes:
                print(f"--- {n.name} log (last lines) ---\n{n.log_tail()}")
            print(f"reproduce: {Path(__file__).name} --stoq {a.stoq} --seed {a.seed} --seconds {a.seconds:.0f}")
        elif not alive:
            return 1
        else:
            print("PASS: every node survived, kept serving, and its RSS came back")
        return code

    try:
        return asyncio.run(go())
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
