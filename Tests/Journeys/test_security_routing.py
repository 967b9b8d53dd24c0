"""Signed routing (issue 15 item 4) on the release binary over [::1]: a plain certified client
(Mallory, speaking stoq/1 with aioquic) tries the two attacks an independent client found.

(a) Rewrite node C's entry at node B: load 12345 and a 161.8 ms link, as unsigned ROUTING_GOSSIP
    (0x11), and as C's signed advert with the load changed (C's signature kept). B refuses the
    first and drops the second; `stoq status --json` still shows C as C signed itself.
(b) Through relay B, send gossip to C claiming to be B's: the relay refuses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import struct
import time

import pytest

from conftest import Procs, User

aioquic = pytest.importorskip("aioquic")
from aioquic.asyncio import connect  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import StreamDataReceived, StreamReset  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402


def varint(v: int) -> bytes:
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack(">H", v | 0x4000)
    if v < 1 << 30:
        return struct.pack(">I", v | 0x8000_0000)
    return struct.pack(">Q", v | 0xC000_0000_0000_0000)


def read_varint(b: bytes, i: int) -> tuple[int, int]:
    n = 1 << (b[i] >> 6)
    v = b[i] & 0x3F
    for k in range(1, n):
        v = v << 8 | b[i + k]
    return v, i + n


def frame(t: int, payload: bytes) -> bytes:
    return varint(t) + varint(len(payload)) + payload


def first_frame(data: bytes) -> tuple[int, bytes]:
    t, i = read_varint(data, 0)
    n, i = read_varint(data, i)
    return t, data[i : i + n]


def error_text(payload: bytes) -> str:
    _, i = read_varint(payload, 0)
    n, i = read_varint(payload, i)
    return payload[i : i + n].decode()


def node_id(cert_path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


class Client(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.buffers: dict[int, bytearray] = {}
        self.waiting: dict[int, asyncio.Future] = {}

    def quic_event_received(self, event) -> None:
        if isinstance(event, StreamDataReceived):
            self.buffers.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream and event.stream_id in self.waiting:
                self.waiting.pop(event.stream_id).set_result(bytes(self.buffers[event.stream_id]))
        elif isinstance(event, StreamReset) and event.stream_id in self.waiting:
            self.waiting.pop(event.stream_id).set_result(b"")

    async def request(self, data: bytes) -> bytes:
        sid = self._quic.get_next_available_stream_id()
        self.waiting[sid] = asyncio.get_running_loop().create_future()
        self._quic.send_stream_data(sid, data, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(self.waiting[sid], 10)


def adverts_of(payload: bytes) -> list[dict]:
    """The adverts of a ROUTING_ADVERTS payload (PROTOCOL.md "Signed routing adverts")."""
    count, i = read_varint(payload, 0)
    certs = []
    for _ in range(count):
        n, i = read_varint(payload, i)
        certs.append(payload[i : i + n])
        i += n
    count, i = read_varint(payload, i)
    out = []
    for _ in range(count):
        hops = payload[i]
        _, i = read_varint(payload, i + 1)
        digest = payload[i : i + 32]
        n, i = read_varint(payload, i + 32)
        body = payload[i : i + n]
        i += n
        n, i = read_varint(payload, i)
        out.append({"hops": hops, "digest": digest, "body": body, "signature": payload[i : i + n],
                    "cert": next(c for c in certs if hashlib.sha256(c).digest() == digest)})
        i += n
    return out


def encode_adverts(adverts: list[dict]) -> bytes:
    certs = []
    for a in adverts:
        if a["cert"] not in certs:
            certs.append(a["cert"])
    p = varint(len(certs)) + b"".join(varint(len(c)) + c for c in certs) + varint(len(adverts))
    for a in adverts:
        p += bytes([a["hops"]]) + varint(0) + a["digest"] + varint(len(a["body"])) + a["body"] + varint(len(a["signature"])) + a["signature"]
    return frame(0x26, p)


def with_load(body: bytes, load: float) -> bytes:
    """The body with `load` and a sequence one second newer (same length); the signature no longer fits."""
    seq, i = read_varint(body, 32)
    assert i - 32 == 8, "a wall-clock sequence takes 8 bytes"
    _, j = read_varint(body, i)
    at = j + 2 + 8 + 16 + 8  # region, position, coordinate, height and error
    b = bytearray(body[:32] + varint(seq + 1_000_000_000) + body[i:])
    b[at : at + 4] = struct.pack(">f", load)
    return bytes(b)


def status(user: User, address: str) -> dict:
    # The operator reads STATUS (closed to other certificates, issue 15 item 1).
    return json.loads(user.ok("status", "--node", address, "--json", *user.tls()).stdout)


def entry(doc: dict, nid: bytes) -> dict | None:
    rid = "r%x" % int.from_bytes(nid[:8], "big")
    return next((n for n in doc["routing"]["nodes"] if n["id"] == rid), None)


def test_forged_routing_changes_nothing(user: User, procs: Procs) -> None:
    # B carries streams for Mallory (the relay right), and still refuses to carry gossip.
    b = user.node(procs, "sr-b", "--role", "relay", "--relay-for", user.cert("sr-mallory")[0], "--gossip-interval", "200", "--probe-interval", "200")
    c = user.node(procs, "sr-c", "--peers", b.address, "--gossip-interval", "200", "--probe-interval", "200")
    c_id = node_id(user.cert("sr-c")[0])
    b_id = node_id(user.cert("sr-b")[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not entry(status(user, b.address), c_id):
        time.sleep(0.3)
    assert entry(status(user, b.address), c_id), "B never learnt C's signed advert"
    cert, key = user.cert("sr-mallory")
    config = QuicConfiguration(is_client=True, alpn_protocols=["stoq/1"], idle_timeout=20.0)
    config.verify_mode = ssl.CERT_NONE
    config.load_cert_chain(str(cert), str(key))
    b_port = int(b.address.rsplit(":", 1)[1])
    c_port = int(c.address.rsplit(":", 1)[1])

    async def attack() -> tuple[str, str, str]:
        async with connect("::1", b_port, configuration=config, create_protocol=Client) as client:
            now = time.time_ns()
            me = int.from_bytes(node_id(cert)[:8], "big")
            c_r = int.from_bytes(c_id[:8], "big")
            b_r = int.from_bytes(b_id[:8], "big")
            f32 = lambda v: struct.pack(">f", v)  # noqa: E731

            def advert(node: int, hops: int, load: float) -> bytes:
                return (struct.pack(">Q", node) + varint(now + 10**9) + bytes([hops]) + struct.pack(">H", 0) + f32(0) + f32(0)
                        + f32(0) * 4 + f32(1) + f32(1) + f32(load) + f32(0) + varint(0))
            legacy = (struct.pack(">Q", me) + varint(2) + advert(me, 0, 0) + advert(c_r, 1, 12345) + varint(1)
                      + struct.pack(">QQ", c_r, b_r) + varint(now + 10**9) + f32(161.8) + f32(0))
            t, p = first_frame(await client.request(frame(0x11, legacy)))
            assert t == 0x09, f"unsigned gossip was answered with {t:#x}"
            refused = error_text(p)
            # B's view, with C's signed advert in it; then C's advert with load 12345.
            t, p = first_frame(await client.request(encode_adverts([])))
            assert t == 0x26, f"{t:#x} {p[:80]!r}"
            of_c = next(a for a in adverts_of(p) if a["body"][:32] == c_id)
            forged = dict(of_c, body=with_load(of_c["body"], 12345.0))
            t, _ = first_frame(await client.request(encode_adverts([forged])))
            assert t == 0x26
            # (b) Through relay B to C: an advert claiming to be B's.
            claim = dict(forged, body=b_id + forged["body"][32:])
            relay_open = varint(1) + c_id + varint(3) + b"::1" + varint(c_port)
            t, p = first_frame(await client.request(frame(0x12, relay_open) + encode_adverts([claim])))
            assert t == 0x09, f"the relay carried routing gossip ({t:#x})"
            return refused, error_text(p), ""

    refused, relay_refusal, _ = asyncio.run(attack())
    assert "only signed routing adverts" in refused, refused
    assert "does not carry routing gossip" in relay_refusal, relay_refusal
    doc = status(user, b.address)
    seen = entry(doc, c_id)
    assert seen and seen["load"] < 2, f"C's entry at B changed: {seen}"
    assert doc["routing"]["signed"]["bad_signatures"] >= 1, doc["routing"]["signed"]
    assert doc["routing"]["gossip"]["rejected"] >= 1, doc["routing"]["gossip"]
    c_doc = status(user, c.address)
    assert entry(c_doc, b_id)["load"] < 2, entry(c_doc, b_id)
