#!/usr/bin/env python3
"""A hostile stoq/1 peer: attacks a running `stoq node` process over real QUIC (aioquic) and checks
that it survives.

    netfuzz.py --stoq PATH/TO/stoq --seed 1 --seconds 60

It makes a network (CA, the node's certificate, the fuzzer's certificate, and a foreign CA with its
own certificate), puts content into the node's store and starts one node with every role that
answers requests: origin, relay, storage (HyperMesh) and the Nexus DHT. When `unshare -rn` works,
the node and the fuzzer run in a network namespace of their own (only `lo`), so nothing the node is
tricked into dialling leaves the namespace; otherwise the node runs without the relay role and the
DHT, and every address the fuzzer names is loopback.

Each round opens several connections at once (most with the network's certificate, some with a
foreign one or none) and, on each, many streams carrying seeded random, extreme-valued, mutated
and truncated frames of every type in docs/PROTOCOL.md, sent whole, split at every byte, left
open, or reset; some connections are dropped without a CONNECTION_CLOSE. Between rounds a
legitimate client must get a PONG that echoes its nonce and the bytes of a chunk that hash to its
id. RSS is sampled from /proc/PID/status all along.

Pass: the node never exits, answers every check, and its RSS comes back to within 20 % of its
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
        self.checks = 0
        self.check_failures = 0
        self.rss_baseline = 0
        self.rss_peak = 0
        self.rss_after = 0
        self.rss_samples = 0
        self.rounds = 0
        self.bytes_sent = 0

    def as_dict(self) -> dict:
        return {
            "rounds": self.rounds, "executions": self.executions, "streams": self.streams,
            "connections": dict(self.connections), "bytes_sent": self.bytes_sent,
            "frames_by_type": dict(sorted(self.frames.items())), "modes": dict(sorted(self.modes.items())),
            "answers": dict(self.answers.most_common()), "errors_seen": dict(self.errors.most_common()),
            "health_checks": self.checks, "health_check_failures": self.check_failures,
            "rss_kib": {"baseline": self.rss_baseline, "peak": self.rss_peak, "after": self.rss_after},
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


class Node:
    def __init__(self, stoq: str, work: Path, rng: random.Random, isolated: bool) -> None:
        self.stoq = stoq
        self.work = work
        certs = work / "certs"
        run([stoq, "certs", "init-ca", "--out", certs / "ca"])
        run([stoq, "certs", "init-ca", "--out", certs / "foreign"])
        for name in ("node", "fuzzer", "checker"):
            run([stoq, "certs", "issue", "--ca", certs / "ca", "--name", name, "--ip", "::1", "--dns", "localhost", "--out", certs])
        run([stoq, "certs", "issue", "--ca", certs / "foreign", "--name", "stranger", "--out", certs / "foreign"])
        self.ca = certs / "ca" / "ca.pem"
        self.cert, self.key = certs / "node.pem", certs / "node.key"
        self.fuzzer = (certs / "fuzzer.pem", certs / "fuzzer.key")
        self.checker = (certs / "checker.pem", certs / "checker.key")
        self.stranger = (certs / "foreign" / "stranger.pem", certs / "foreign" / "stranger.key")
        data = work / "data"
        data.mkdir()
        (data / "a.bin").write_bytes(sf.rand_bytes(rng, 300_000))
        (data / "b.txt").write_bytes(b"netfuzz\n" * 100)
        self.store = work / "store"
        out = run([stoq, "put", data, "--store", self.store])
        cid = next(w for w in out.split() if w.startswith("stoq:"))
        self.content_id = base32_id(cid)
        chunks = self.store / "chunks"
        self.chunk_ids = []
        if chunks.is_dir():
            for f in sorted(chunks.rglob("*"))[:64]:
                if f.is_file() and len(f.stem) == 64:
                    try:
                        self.chunk_ids.append(bytes.fromhex(f.stem))
                    except ValueError:
                        pass
        self.port = free_udp_port()
        self.isolated = isolated
        cmd = [stoq, "node", "--name", "target", "--listen", f"[::1]:{self.port}", "--cert", self.cert, "--key", self.key,
               "--ca", self.ca, "--store", self.store, "--role", "origin", "--role", "storage", "--log-level", "warning"]
        if isolated:
            cmd += ["--role", "relay", "--dht"]
        self.cmd = [str(c) for c in cmd]
        self.log = open(work / "node.log", "w")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready "):
                self.ready_line = line.strip()
                break
        else:
            self.stop()
            raise SystemExit("netfuzz: the node did not print 'ready' within 60 s")
        if self.proc.poll() is not None:
            raise SystemExit(f"netfuzz: the node exited at start ({self.proc.returncode}); see {work / 'node.log'}")
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
            return "\n".join((self.work / "node.log").read_text(errors="replace").splitlines()[-n:])
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


# --------------------------------------------------------------------------- attack


class Fuzzer:
    def __init__(self, node: Node, args: argparse.Namespace) -> None:
        self.node = node
        self.args = args
        self.stats = Stats()
        my_id = sf.spki_sha256(node.fuzzer[0].read_bytes())
        self.ctx = sf.Ctx(content_id=node.content_id, chunk_ids=node.chunk_ids, my_node_id=my_id, node_port=node.port,
                          isolated=node.isolated)
        self.generators = list(sf.GENERATORS.items())
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
            if not self.node.isolated and ftype in (0x12, 0x40):
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
            self.stats.answers["no answer in time"] += 1
            return
        if s.reset is not None:
            self.stats.answers[f"reset {s.reset:#x}"] += 1
            self.stats.errors[f"reset {s.reset:#x}"] += 1
            return
        frames = parse_frames(bytes(s.data))
        if not frames:
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
        cert = {"network": self.node.fuzzer, "foreign": self.node.stranger, "none": (None, None)}[kind]
        self.stats.connections["attempted"] += 1
        self.stats.connections[f"attempted ({kind} certificate)"] += 1
        config = client_config(*cert)
        try:
            async with asyncio.timeout(self.args.answer_timeout * 3 + streams * 0.2):
                async with connect("::1", self.node.port, configuration=config, create_protocol=FuzzProtocol,
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
        """A PING must come back as a PONG with its nonce, and GET_CHUNK as the chunk's bytes."""
        self.stats.checks += 1
        last = "no attempt"
        for attempt in range(3):
            try:
                async with asyncio.timeout(self.args.check_timeout):
                    async with connect("::1", self.node.port, configuration=client_config(*self.node.checker),
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
                        chunk = self.node.content_id
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
            r = rss_kib(self.node.pid)
            self.stats.rss_peak = max(self.stats.rss_peak, r)
            self.stats.rss_samples += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except asyncio.TimeoutError:
                pass

    async def settle(self, limit: float, within: float) -> int:
        """Waits (at most `limit` s) for RSS to come within `within` of the baseline; returns it."""
        deadline = time.monotonic() + limit
        r = rss_kib(self.node.pid)
        while time.monotonic() < deadline:
            r = rss_kib(self.node.pid)
            if r <= self.stats.rss_baseline * (1 + within):
                return r
            await asyncio.sleep(1)
        return r

    # ---- the whole run

    async def main(self) -> int:
        a = self.args
        print(f"netfuzz: seed {a.seed}, {a.seconds:.0f} s, node pid {self.node.pid} ({self.node.ready_line}); "
              f"{'own network namespace' if self.node.isolated else 'shared loopback (no relay/DHT roles)'}", flush=True)
        # Warm-up: legitimate requests and one small round of every frame type, then the baseline.
        if (err := await self.check()) is not None:
            self.failures.append(f"the node did not answer before the attack: {err}")
            return 1
        saved = (a.connections, a.streams)
        a.connections, a.streams = 2, 40
        await self.round(-1)
        a.connections, a.streams = saved
        await self.check()
        await asyncio.sleep(a.warmup_settle)
        self.stats.rss_baseline = max(rss_kib(self.node.pid), 1)
        self.stats.rss_peak = self.stats.rss_baseline
        print(f"netfuzz: baseline RSS {self.stats.rss_baseline} KiB after warm-up", flush=True)
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sample_rss(stop))
        start = time.monotonic()
        index = 0
        while time.monotonic() - start < a.seconds:
            await self.round(index)
            index += 1
            if not self.node.alive():
                self.failures.append(f"the node exited with {self.node.proc.returncode} during round {index - 1} (seed {a.seed})")
                break
            if (err := await self.check()) is not None:
                self.failures.append(f"after round {index - 1} (seed {a.seed}) the node failed a legitimate request: {err}")
                break
            if a.verbose:
                print(f"  round {index - 1}: {self.stats.executions} executions, RSS {rss_kib(self.node.pid)} KiB", flush=True)
        stop.set()
        await sampler
        if self.node.alive() and not self.failures:
            self.stats.rss_after = await self.settle(a.settle, a.rss_tolerance)
            if (err := await self.check()) is not None:
                self.failures.append(f"after the attack the node failed a legitimate request: {err}")
            if self.stats.rss_after > self.stats.rss_baseline * (1 + a.rss_tolerance):
                self.failures.append(
                    f"RSS stayed at {self.stats.rss_after} KiB, {100 * (self.stats.rss_after / self.stats.rss_baseline - 1):.0f} % above "
                    f"its {self.stats.rss_baseline} KiB baseline {a.settle:.0f} s after the attack (limit {100 * a.rss_tolerance:.0f} %)")
        elif not self.node.alive() and not self.failures:
            self.failures.append(f"the node exited with {self.node.proc.returncode}")
        return 1 if self.failures else 0


def report(f: Fuzzer, elapsed: float) -> None:
    s = f.stats
    print(f"netfuzz statistics (seed {f.args.seed}, {elapsed:.0f} s):")
    print(f"  rounds {s.rounds}, executions {s.executions}, streams {s.streams}, bytes sent {s.bytes_sent}")
    print("  connections: " + ", ".join(f"{k} {v}" for k, v in sorted(s.connections.items())))
    print("  frames by type: " + ", ".join(f"{k} {v}" for k, v in sorted(s.frames.items())))
    print("  modes: " + ", ".join(f"{k} {v}" for k, v in sorted(s.modes.items())))
    print("  answers: " + ", ".join(f"{k} {v}" for k, v in s.answers.most_common()))
    print("  errors seen: " + ", ".join(f"{k} {v}" for k, v in s.errors.most_common()))
    print(f"  health checks {s.checks}, failed {s.check_failures}")
    peak = 100 * (s.rss_peak / s.rss_baseline - 1) if s.rss_baseline else 0
    after = 100 * (s.rss_after / s.rss_baseline - 1) if s.rss_baseline and s.rss_after else 0
    print(f"  RSS KiB: before {s.rss_baseline}, peak during {s.rss_peak} ({peak:+.0f} %), after {s.rss_after} ({after:+.0f} %)")


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
    p.add_argument("--answer-timeout", type=float, default=3.0, help="seconds to wait for an answer to a fuzz stream")
    p.add_argument("--check-timeout", type=float, default=15.0, help="seconds a legitimate PING + GET_CHUNK may take")
    p.add_argument("--settle", type=float, default=90.0, help="seconds the node gets for its RSS to come back")
    p.add_argument("--warmup-settle", type=float, default=3.0)
    p.add_argument("--rss-tolerance", type=float, default=0.20)
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
        node = Node(a.stoq, work, random.Random(a.seed), isolated=in_own_namespace())
        f = Fuzzer(node, a)
        try:
            code = await f.main()
        finally:
            alive = node.alive()
            node.stop()
            report(f, time.monotonic() - started)
            if a.json:
                Path(a.json).write_text(json.dumps(dict(f.stats.as_dict(), seed=a.seed, failures=f.failures), indent=2))
        for failure in f.failures:
            print(f"FAIL: {failure}")
        if f.failures:
            print(f"--- node log (last lines) ---\n{node.log_tail()}")
            print(f"reproduce: {Path(__file__).name} --stoq {a.stoq} --seed {a.seed} --seconds {a.seconds:.0f}")
        elif not alive:
            return 1
        else:
            print("PASS: the node survived, kept serving, and its RSS came back")
        return code

    try:
        return asyncio.run(go())
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
