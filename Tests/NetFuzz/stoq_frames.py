"""Encoders for every stoq/1 frame a hostile peer can send (docs/PROTOCOL.md), written from the
protocol text, not from the Swift code: STOQ core 0x01-0x12, uploads 0x18-0x1b and signed routing adverts 0x26, Nexus 0x40-0x7f, HyperMesh 0x80-0xbf.

Each generator takes a `random.Random` and a `Ctx` (what the fuzzer knows about the node under
attack) and returns `(frame_type, payload, extra)`: the payload of one frame and any raw bytes that
follow it on the stream (PUT_SHARD's body). Most values come from `extreme_*`: 0, 1, the bounds the
protocol states and one past them, 2^62 - 1 (the largest QUIC varint), 2^62 and 2^64 - 1 where the
field is fixed width, far-past and far-future timestamps.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VARINT_MAX = (1 << 62) - 1
U64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------- primitives


def varint(v: int) -> bytes:
    """QUIC varint; values above 2^62 - 1 are masked (the wire cannot carry them)."""
    v &= VARINT_MAX
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack(">H", v | 0x4000)
    if v < 1 << 30:
        return struct.pack(">I", v | 0x8000_0000)
    return struct.pack(">Q", v | 0xC000_0000_0000_0000)


def varint_long(v: int, width: int) -> bytes:
    """A non-minimal varint of `width` bytes (1, 2, 4, 8): legal in QUIC, odd in STOQ."""
    tag = {1: 0, 2: 1, 4: 2, 8: 3}[width]
    v &= (1 << (8 * width - 2)) - 1
    return (v | (tag << (8 * width - 2))).to_bytes(width, "big")


def frame(ftype: int, payload: bytes) -> bytes:
    return varint(ftype) + varint(len(payload)) + payload


def string(s: bytes | str) -> bytes:
    if isinstance(s, str):
        s = s.encode()
    return varint(len(s)) + s


def u8(v: int) -> bytes:
    return struct.pack(">B", v & 0xFF)


def u16(v: int) -> bytes:
    return struct.pack(">H", v & 0xFFFF)


def u32(v: int) -> bytes:
    return struct.pack(">I", v & 0xFFFF_FFFF)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v & U64_MAX)


def f64(v: float) -> bytes:
    return struct.pack(">d", v)


def f32(v: float) -> bytes:
    try:
        return struct.pack(">f", v)
    except OverflowError:
        return struct.pack(">f", float("inf") if v > 0 else float("-inf"))


def extreme_varint(rng: random.Random, bound: int | None = None) -> int:
    choices = [0, 1, 2, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, 1 << 32, VARINT_MAX, VARINT_MAX - 1,
               rng.randrange(0, 1 << 62)]
    if bound is not None:
        choices += [bound, bound + 1, max(0, bound - 1)]
    return rng.choice(choices)


def extreme_u64(rng: random.Random) -> int:
    return rng.choice([0, 1, VARINT_MAX, 1 << 62, (1 << 63) - 1, 1 << 63, U64_MAX, U64_MAX - 1, rng.getrandbits(64)])


def extreme_u32(rng: random.Random) -> int:
    return rng.choice([0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 4096, 65536, 1 << 24, rng.getrandbits(32)])


def extreme_u16(rng: random.Random) -> int:
    return rng.choice([0, 1, 9, 10, 13, 14, 15, 255, 256, 0x7FFF, 0xFFFF, rng.getrandbits(16)])


def extreme_float(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, 1.0, -1.0, 90.0, 90.0001, -90.0, 180.0, 180.5, -181.0, 1e30, -1e30, 3.4e38, -3.4e38,
                       1e-45, float("nan"), float("inf"), float("-inf"), rng.uniform(-1e6, 1e6)])


def extreme_ms(rng: random.Random) -> int:
    """A timestamp in ms since 1970: now, far past, far future, the extremes."""
    now = int(time.time() * 1000)
    return rng.choice([now, now - 1, now + 5 * 60 * 1000 - 1, now + 5 * 60 * 1000 + 1, now + 10 ** 12, 0, 1,
                       U64_MAX, U64_MAX - 1000, 1 << 63, VARINT_MAX, now - 10 ** 12])


def rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "big") if n > 0 else b""


def rand_text(rng: random.Random, lo: int, hi: int) -> bytes:
    n = rng.randint(lo, hi)
    kind = rng.randrange(6)
    if kind == 0:
        return rand_bytes(rng, n)  # probably not UTF-8
    if kind == 1:
        return ("é" * n).encode()[:n]  # may cut a character in half
    if kind == 2:
        return b"\x00\n\x7f" * (n // 3)
    if kind == 3:
        return b"A" * n
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-./") for _ in range(n)).encode()


# --------------------------------------------------------------------------- identity helpers


def sign_p256(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def x963(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def spki_sha256(cert_pem: bytes) -> bytes:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


@dataclass
class Ctx:
    """What the fuzzer knows: the node's content and chunks, its own node id, signing keys."""

    content_id: bytes                 # the root manifest chunk id of content the node holds
    chunk_ids: list[bytes]            # chunk ids the node holds
    my_node_id: bytes                 # SHA-256 of the fuzzer's certificate SPKI
    node_port: int
    owner: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    names: list[str] = field(default_factory=list)
    isolated: bool = False            # in a network namespace of its own: ULA/link-local targets may be named

    def some_id(self, rng: random.Random) -> bytes:
        k = rng.randrange(4)
        if k == 0:
            return self.content_id
        if k == 1 and self.chunk_ids:
            return rng.choice(self.chunk_ids)
        if k == 2:
            return b"\x00" * 32
        return rand_bytes(rng, 32)

    def name(self, rng: random.Random) -> str:
        if self.names and rng.random() < 0.6:
            return rng.choice(self.names)
        n = f"fz{rng.randrange(1 << 30)}"
        if len(self.names) < 64:
            self.names.append(n)
        return n


# --------------------------------------------------------------------------- STOQ core (0x01-0x3f)


def g_hello(rng: random.Random, c: Ctx):
    p = varint(rng.choice([1, 1, 0, 2, VARINT_MAX])) + c.some_id(rng) + string(rand_text(rng, 0, 70))
    p += f64(extreme_float(rng)) + f64(extreme_float(rng)) + varint(extreme_varint(rng)) + varint(extreme_varint(rng))
    return 0x01, p, b""


def g_ping(rng, c):
    return 0x02, u64(extreme_u64(rng)) + varint(extreme_varint(rng)), b""


def g_pong(rng, c):
    p = u64(extreme_u64(rng)) + varint(extreme_varint(rng)) + varint(extreme_varint(rng, 1000))
    p += varint(extreme_varint(rng)) + varint(extreme_varint(rng))
    return 0x03, p, b""


def _bitfield(rng: random.Random, count: int) -> bytes:
    n = (count + 7) // 8
    if n > 600_000 or (n > 4096 and rng.random() < 0.9):
        n = rng.choice([0, 1, 16, 4097])  # a huge count with too few bytes (the whole field rarely: 512 KiB)
    elif rng.random() < 0.2:
        n = max(0, n + rng.choice([-1, 1]))
    return rand_bytes(rng, n) if rng.random() < 0.5 else b"\x00" * n


def g_have(rng, c):
    count = rng.choice([0, 1, 7, 8, 9, 1000, 4_194_304, 4_194_305, VARINT_MAX])
    p = c.some_id(rng) + varint(count) + _bitfield(rng, count)
    if rng.random() < 0.5:
        p += varint(extreme_varint(rng))
    return 0x04, p, b""


def g_want(rng, c):
    count = rng.choice([0, 0, 0, 1, 9, 4_194_304, 4_194_305, VARINT_MAX])
    return 0x05, c.some_id(rng) + varint(count) + _bitfield(rng, count), b""


def g_get_chunk(rng, c):
    return 0x06, c.some_id(rng) + varint(extreme_varint(rng, 16 << 20)) + varint(extreme_varint(rng, 16 << 20)), b""


def g_chunk_header(rng, c):
    p = varint(rng.choice([0, 1, 2, 3, 4, 5, VARINT_MAX])) + b"".join(varint(extreme_varint(rng)) for _ in range(3))
    return 0x07, p, b""


def g_invalidate(rng, c):
    return 0x08, string(c.name(rng) if rng.random() < 0.7 else rand_text(rng, 0, 300)) + varint(extreme_varint(rng)), b""


def g_error(rng, c):
    return 0x09, varint(extreme_varint(rng)) + string(rand_text(rng, 0, 1100)), b""


def g_status_request(rng, c):
    return 0x0A, b"" if rng.random() < 0.8 else rand_bytes(rng, rng.randint(1, 8)), b""


def g_status(rng, c):
    return 0x0B, string(rand_text(rng, 0, 5000)), b""


def g_chunk_pending(rng, c):
    return 0x0C, varint(extreme_varint(rng)), b""


def g_name_resolve(rng, c):
    name = c.name(rng).encode() if rng.random() < 0.7 else rand_text(rng, 0, 300)
    return 0x0D, string(name) + varint(rng.choice([0, 1, 2, VARINT_MAX])), b""


def stoq_name_record(rng: random.Random, c: Ctx, version: int | None = None, good_sig: bool = True) -> bytes:
    """An STNR record: "STNR" 1 len name content32 version:u64 ttl:u32 ownerKey65 signature64,
    signed over "STOQ name record v1" + body."""
    name = c.name(rng).encode()
    if version is None:
        version = rng.choice([1, 2, VARINT_MAX, 1 << 62, (1 << 62) + 1, 1 << 63, U64_MAX, rng.getrandbits(64), rng.randrange(1, 1000)])
    content = c.content_id if rng.random() < 0.85 else rand_bytes(rng, 32)
    body = b"STNR" + b"\x01" + u8(len(name)) + name + content + u64(version) + u32(extreme_u32(rng)) + x963(c.owner)
    sig = sign_p256(c.owner, b"STOQ name record v1" + body) if good_sig else rand_bytes(rng, 64)
    return body + sig


def g_name_record(rng, c):
    return 0x0E, string(stoq_name_record(rng, c)), b""


def g_name_publish(rng, c):
    rec = stoq_name_record(rng, c, good_sig=rng.random() < 0.9)
    if rng.random() < 0.1:
        rec = rec[: rng.randrange(len(rec))]
    return 0x0F, string(rec), b""


def g_name_published(rng, c):
    return 0x10, varint(extreme_varint(rng)) + varint(extreme_varint(rng)), b""


def g_routing_gossip(rng, c):
    """sender:u64, nodeCount, node adverts, linkCount, link adverts (PROTOCOL.md)."""
    me = int.from_bytes(c.my_node_id[:8], "big")
    sender = me if rng.random() < 0.8 else rng.getrandbits(64)
    nodes = []
    for i in range(rng.choice([0, 1, 2, 5, 40])):
        node = sender if i == 0 else rng.choice([rng.getrandbits(64), me, 0, U64_MAX])
        a = u64(node) + varint(extreme_varint(rng)) + u8(0 if i == 0 else rng.choice([0, 1, 7, 254, 255]))
        a += u16(extreme_u16(rng)) + f32(rng.choice([0.0, 45.0, 90.0, 91.0, float("nan")])) + f32(rng.choice([0.0, 179.0, 180.0, -181.0]))
        a += b"".join(f32(rng.choice([0.0, 1.0, 3.4e38, -3.4e38, 1e10, 1e6, -1e6, 1000001.0])) for _ in range(4))
        a += f32(rng.choice([0.0, 3.4e38, -1.0, 1e6, 1000001.0])) + f32(rng.choice([0.0, 0.5, 1.0, 1.5])) + f32(rng.choice([0.0, 1.0, 3.4e38, -0.5]))
        a += f32(rng.choice([0.0, 1e9, 3.4e38])) + varint(rng.choice([0, 1, 0xFFFF_FFFF, 0x1_0000_0000, VARINT_MAX]))
        nodes.append(a)
    links = []
    for _ in range(rng.choice([0, 1, 3, 100])):
        frm = rng.choice([sender, rng.getrandbits(64)])
        to = rng.choice([frm, rng.getrandbits(64), me])
        links.append(u64(frm) + u64(to) + varint(extreme_varint(rng)) + f32(rng.choice([0.0, 1e-45, 1.0, 1e6, 1000001.0, 3.4e38, float("inf")])) + f32(rng.choice([0.0, 1e9, -1.0])))
    count_n = len(nodes) if rng.random() < 0.9 else rng.choice([256, 257, VARINT_MAX])
    count_l = len(links) if rng.random() < 0.9 else rng.choice([2048, 2049, VARINT_MAX])
    return 0x11, u64(sender) + varint(count_n) + b"".join(nodes) + varint(count_l) + b"".join(links), b""


def g_relay_open(rng, c):
    has = rng.choice([0, 1, 1, 2])
    p = varint(has) + (c.some_id(rng) if has == 1 else b"")
    # Hosts stay on this machine (and the fuzzer runs in its own network namespace when it can).
    hosts = ["::1", "::1", "localhost", "::", "[::1]", "::ffff:127.0.0.1", "127.0.0.1", "", "not a host", "::1%lo", ":" * 40]
    if c.isolated:
        hosts += ["fe80::1", "ff02::1", "fd00::1", "2001:db8::1"]
    host = rng.choice(hosts)
    port = rng.choice([c.node_port, c.node_port, 0, 1, 9, 65535, 65536, VARINT_MAX])
    p += string(host) + varint(port)
    # The request meant for the target follows on the same stream.
    extra = frame(0x02, u64(rng.getrandbits(64)) + varint(0)) if rng.random() < 0.5 else rand_bytes(rng, rng.randrange(64))
    return 0x12, p, extra


def g_upload(rng, c):
    """UPLOAD_OFFER/NEED/CHUNK/COMMIT (0x18-0x1B, docs/PROTOCOL.md "Uploading content"). A node that
    does not list the fuzzer as a publisher answers ERROR 5 after the frame decodes."""
    t = rng.choice([0x18, 0x18, 0x19, 0x1A, 0x1A, 0x1B])
    if t == 0x18:
        count = rng.choice([0, 1, 3, 131_072, 131_073, 0xFFFF_FFFF])
        chunks = b"".join(rand_bytes(rng, 32) + u32(rng.choice([0, 1, 4096, 1 << 20, (1 << 20) + 1])) for _ in range(min(count, 3)))
        file_node = u8(0) + u16(24) + b"application/octet-stream" + u32(count) + chunks
        tree = rng.choice([file_node, u8(1) + u32(1) + u16(1) + b"a" + u32(0o644) + file_node, u8(2) + u16(1) + b"x",
                           u8(1) + u32(0xFFFF_FFFF), rand_bytes(rng, rng.randrange(64))])
        return t, varint(rng.choice([0, 1, 2, VARINT_MAX])) + string(rng.choice(["site", "", "a" * 256])) + tree, b""
    if t == 0x1A:
        length = rng.choice([0, 1, 100, 1 << 20, (1 << 20) + 1, VARINT_MAX])
        p = u64(rng.getrandbits(64)) + varint(rng.choice([0, 1, 131_071, 131_072, VARINT_MAX])) + varint(length)
        return t, p, rand_bytes(rng, rng.choice([0, 1, 100, 5000]))
    if t == 0x19:
        n = rng.choice([0, 1, 5, 131_073, VARINT_MAX])
        return t, u64(rng.getrandbits(64)) + varint(n) + varint(n) + b"".join(varint(rng.randrange(200_000)) for _ in range(min(n, 5))), b""
    return t, u64(rng.getrandbits(64)) + (rand_bytes(rng, rng.choice([0, 32, 40])) if rng.random() < 0.5 else b""), b""


def g_renew(rng, c):
    """RENEW_REQUEST (0x20): lifetime, new key + signature (both empty, or both set); RENEWED (0x21)."""
    if rng.random() < 0.8:
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        choice = rng.randrange(5)
        if choice == 0:
            pk, sig = b"", b""
        elif choice == 1:
            pk, sig = spki, key.sign(rand_bytes(rng, 32), ec.ECDSA(hashes.SHA256()))
        elif choice == 2:
            pk, sig = spki, b""
        elif choice == 3:
            pk, sig = rand_bytes(rng, rng.choice([1, 91, 256, 257])), rand_bytes(rng, rng.choice([1, 72, 160, 161]))
        else:
            pk, sig = b"", rand_bytes(rng, 8)
        lifetime = rng.choice([0, 1, 12, 86_400, 3_153_600_000, 3_153_600_001, VARINT_MAX])
        return 0x20, varint(lifetime) + string(pk) + string(sig), b""
    count = rng.choice([0, 1, 4, 5, VARINT_MAX])
    certs = b"".join(string(rand_bytes(rng, rng.choice([0, 1, 300, 8192, 8193]))) for _ in range(min(count, 5)))
    return 0x21, varint(count) + certs, b""


# --------------------------------------------------------------------------- Nexus (0x40-0x7f)


def nexus_address(rng: random.Random, isolated: bool = False) -> bytes:
    """16-byte address + port: loopback, or ULA (fd00::/8) when the node runs in a namespace of its own."""
    if not isolated or rng.random() < 0.5:
        addr = b"\x00" * 15 + b"\x01"
    else:
        addr = b"\xfd" + rand_bytes(rng, 15)
    return addr + u16(rng.choice([0, 1, 4433, 65535]))


def node_record(rng: random.Random, node_id: bytes, addresses: int | None = None, isolated: bool = False) -> bytes:
    n = rng.choice([0, 0, 1, 4, 5]) if addresses is None else addresses
    body = node_id + u8(n) + b"".join(nexus_address(rng, isolated) for _ in range(min(n, 6)))
    region = rand_text(rng, 0, 40)
    return body + u8(len(region)) + region + rand_bytes(rng, 32)


def nexus_name_record(rng: random.Random, c: Ctx) -> tuple[bytes, bytes]:
    """A signed Nexus name record and its DHT key: "SNR" 1 | u8 name | tag | version u64 |
    issuedAt u64 | ttl u32 | owner key 65 | signature 64."""
    name = c.name(rng).encode()
    if rng.random() < 0.8:
        value = b"\x01" + c.content_id
    else:
        eps = rng.choice([0, 1, 32, 33])
        value = b"\x02" + u8(eps) + b"".join(rand_bytes(rng, 32) + u8(1) + nexus_address(rng, c.isolated) for _ in range(min(eps, 40)))
    ttl = rng.choice([0, 1, 60, 7 * 24 * 3600, 7 * 24 * 3600 + 1, 0xFFFF_FFFF])
    body = b"SNR\x01" + u8(len(name)) + name + value + u64(extreme_u64(rng)) + u64(extreme_ms(rng)) + u32(ttl) + x963(c.owner)
    return body + sign_p256(c.owner, body), hashlib.sha256(b"stoq-name:" + name).digest()


def signed_node_record(rng: random.Random, c: Ctx) -> bytes:
    """"SNN" 1 | NodeRecord | issuedAt u64 | ttl u32 | location flag (+ 2 x i32 micro-degrees) |
    u16 key + SPKI | signature. Signed with a fresh key, so it never verifies as the fuzzer's node."""
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    body = b"SNN\x01" + node_record(rng, hashlib.sha256(spki).digest(), isolated=c.isolated) + u64(extreme_ms(rng)) + u32(extreme_u32(rng))
    if rng.random() < 0.5:
        body += b"\x01" + u32(rng.choice([0, 90_000_000, 90_000_001, 0x8000_0000])) + u32(rng.choice([0, 180_000_000, 0xFFFF_FFFF]))
    else:
        body += b"\x00"
    body += u16(len(spki)) + spki
    return body + sign_p256(key, body)


def dht_message(rng: random.Random, c: Ctx) -> bytes:
    rpc = u64(extreme_u64(rng))
    t = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 10, 10, 11, 12, 0])
    head = b"\x4e\x01" + u8(t) + rpc
    if t in (3, 5, 7):
        return head + c.some_id(rng)
    if t in (4, 8):
        groups = 2 if t == 8 else 1
        out = head
        for _ in range(groups):
            n = rng.choice([0, 1, 3, 32, 33])
            out += u8(n) + b"".join(node_record(rng, rand_bytes(rng, 32), isolated=c.isolated) for _ in range(min(n, 4)))
        return out
    if t == 6:
        v = rand_bytes(rng, rng.choice([0, 10, 8192]))
        return head + u16(len(v) if rng.random() < 0.9 else 0xFFFF) + v + u32(extreme_u32(rng))
    if t == 9:
        k = rng.random()
        if k < 0.5:
            value, key = nexus_name_record(rng, c)
        elif k < 0.75:
            value, key = signed_node_record(rng, c), c.some_id(rng)
        else:
            value, key = rand_bytes(rng, rng.choice([0, 1, 100, 8192, 8193])), c.some_id(rng)
        return head + key + u16(len(value)) + value + u32(extreme_u32(rng))
    if t == 10:
        own = rng.random() < 0.7
        return head + c.some_id(rng) + node_record(rng, c.my_node_id if own else rand_bytes(rng, 32), isolated=c.isolated) + u32(extreme_u32(rng))
    if t == 11:
        return head + u8(rng.choice([0, 1, 2]))
    return head + rand_bytes(rng, rng.randrange(40))


def g_nexus_request(rng, c):
    """0x40: sender NodeRecord | u16 length | DHT message. The sender is the fuzzer's own id (so it
    passes the handshake check) most of the time."""
    sender = c.my_node_id if rng.random() < 0.85 else rand_bytes(rng, 32)
    msg = dht_message(rng, c)
    ln = len(msg) if rng.random() < 0.9 else rng.choice([0, 0xFFFF, len(msg) + 1])
    return 0x40, node_record(rng, sender, isolated=c.isolated) + u16(ln) + msg, b""


def g_nexus_other(rng, c):
    t = rng.choice([0x41, 0x42, 0x4F, 0x50, 0x5F, 0x60, 0x7E, 0x7F])
    return t, rand_bytes(rng, rng.randrange(200)), b""


# --------------------------------------------------------------------------- HyperMesh (0x80-0xbf)


def block_id(rng: random.Random, c: Ctx) -> bytes:
    return c.some_id(rng)


def g_hm_info_request(rng, c):
    return 0x80, b"" if rng.random() < 0.9 else rand_bytes(rng, 3), b""


def g_hm_info(rng, c):
    region = rand_text(rng, 0, 70)
    return 0x81, rand_bytes(rng, 32) + u16(len(region)) + region + u64(extreme_u64(rng)) + u64(extreme_u64(rng)), b""


def g_hm_put_shard(rng, c):
    body_len = rng.choice([0, 1, 100, 4096, 65536])
    body = rand_bytes(rng, body_len)
    declared = rng.choice([body_len, body_len, body_len + 1, max(0, body_len - 1), 0, extreme_u32(rng)])
    digest = hashlib.sha256(body).digest() if rng.random() < 0.7 else rand_bytes(rng, 32)
    return 0x82, block_id(rng, c) + u16(extreme_u16(rng)) + u32(declared) + digest, body


def g_hm_receipt(rng, c):
    return 0x83, rand_bytes(rng, rng.choice([0, 64, 200, 300])), b""


def g_hm_get_shard(rng, c):
    return rng.choice([0x84, 0x88]), block_id(rng, c) + u16(extreme_u16(rng)), b""


def g_hm_shard(rng, c):
    return 0x85, u32(extreme_u32(rng)), rand_bytes(rng, rng.randrange(100))


def g_hm_challenge(rng, c):
    p = block_id(rng, c) + u16(extreme_u16(rng)) + rand_bytes(rng, 16) + u32(extreme_u32(rng)) + u32(extreme_u32(rng))
    return 0x86, p, b""


def g_hm_answer(rng, c):
    return rng.choice([0x87, 0x89]), rand_bytes(rng, rng.choice([0, 32])), b""


def g_hm_manifest(rng, c):
    return rng.choice([0x8A, 0x8D]), rand_bytes(rng, rng.choice([0, 10, 300, 4000])), b""


def g_hm_get_manifest(rng, c):
    return rng.choice([0x8C, 0x8E, 0x8B]), block_id(rng, c), b""


def g_hm_holdings(rng, c):
    # HOLDINGS_REQUEST (block id) and HOLDINGS (count <= 64, each receipt u16-length <= 512).
    if rng.random() < 0.5:
        return 0x90, block_id(rng, c) if rng.random() < 0.9 else rand_bytes(rng, rng.choice([0, 31, 33])), b""
    count = rng.choice([0, 1, 14, 64, 65, 255])
    body = u8(count)
    for _ in range(min(count, rng.choice([0, 1, 3]))):
        n = rng.choice([0, 40, 300, 512, 513, 65535])
        body += u16(n) + rand_bytes(rng, min(n, 600))
    return 0x91, body, b""


def g_hm_other(rng, c):
    t = rng.choice([0x8F, 0x90, 0xA0, 0xBE, 0xBF])
    if t == 0xBF:
        msg = rand_text(rng, 0, 1100)
        return t, u16(extreme_u16(rng)) + u16(len(msg)) + msg, b""
    return t, rand_bytes(rng, rng.randrange(100)), b""


# --------------------------------------------------------------------------- outside every range


def g_unknown(rng, c):
    t = rng.choice([0x00, 0x13, 0x3F, 0xC0, 0xFF, 0x1000, 0x1003, 0x1007, VARINT_MAX, VARINT_MAX - 4])
    return t, rand_bytes(rng, rng.randrange(64)), b""


GENERATORS = {
    "HELLO": g_hello, "PING": g_ping, "PONG": g_pong, "HAVE": g_have, "WANT": g_want, "GET_CHUNK": g_get_chunk,
    "CHUNK_HEADER": g_chunk_header, "INVALIDATE": g_invalidate, "ERROR": g_error, "STATUS_REQUEST": g_status_request,
    "STATUS": g_status, "CHUNK_PENDING": g_chunk_pending, "NAME_RESOLVE": g_name_resolve, "NAME_RECORD": g_name_record,
    "NAME_PUBLISH": g_name_publish, "NAME_PUBLISHED": g_name_published, "ROUTING_GOSSIP": g_routing_gossip,
    "RELAY_OPEN": g_relay_open, "UPLOAD": g_upload, "RENEW": g_renew,
    "NEXUS_DHT_REQUEST": g_nexus_request, "NEXUS_OTHER": g_nexus_other,
    "HM_INFO_REQUEST": g_hm_info_request, "HM_INFO": g_hm_info, "HM_PUT_SHARD": g_hm_put_shard, "HM_RECEIPT": g_hm_receipt,
    "HM_GET_OR_DELETE_SHARD": g_hm_get_shard, "HM_SHARD": g_hm_shard, "HM_CHALLENGE": g_hm_challenge,
    "HM_ANSWER_OR_OK": g_hm_answer, "HM_MANIFEST": g_hm_manifest, "HM_GET_OR_DELETE_MANIFEST": g_hm_get_manifest,
    "HM_HOLDINGS": g_hm_holdings, "HM_OTHER": g_hm_other, "UNKNOWN": g_unknown,
}


# --------------------------------------------------------------------------- edge registry (0x1C-0x1F)


def _edge_location(rng: random.Random) -> bytes:
    flag = rng.choice([0, 1, 1, 2, 255])
    if flag != 1:
        return u8(flag)
    return u8(1) + f64(rng.choice([0.0, 48.85, -90.0, 90.0, 90.5, -1e308])) + f64(rng.choice([2.35, 180.0, -180.0, 181.0, float("nan")]))


def g_edge_register(rng, c):
    host = rng.choice(["::1", "::", "", "fe80::1%lo", "x" * 64, "x" * 65, ":" * 80])
    p = string(host) + varint(rng.choice([c.node_port, 0, 65535, 65536, VARINT_MAX]))
    p += string(rand_text(rng, 0, 80)) + _edge_location(rng)
    return 0x1C, p, b""


def g_edges_request(rng, c):
    p = string(rand_text(rng, 0, 80)) + _edge_location(rng) + varint(rng.choice([0, 1, 256, 257, VARINT_MAX]))
    return 0x1E, p, b""


def g_edge_answers(rng, c):
    t = rng.choice([0x1D, 0x1F])
    if t == 0x1D:
        return t, varint(rng.choice([0, 1, 86400, 86401, VARINT_MAX])), b""
    return t, varint(rng.choice([0, 1, 256, 257, VARINT_MAX])) + rand_bytes(rng, rng.randrange(200)), b""


GENERATORS.update({"EDGE_REGISTER": g_edge_register, "EDGES_REQUEST": g_edges_request, "EDGE_ANSWERS": g_edge_answers})


# --------------------------------------------------------------------------- access grants (0x22-0x25)


def g_grant(rng, c):
    """GRANT (0x22): junk or truncated grants (version, block count ≤ 16, bodies, signatures);
    GRANT_ACCEPTED (0x23, an answer); REVOCATIONS (0x24, a list or junk); REVOCATIONS_REQUEST (0x25)."""
    t = rng.choice([0x22, 0x22, 0x23, 0x24, 0x25])
    if t == 0x22:
        blocks = rng.choice([0, 1, 2, 16, 17, VARINT_MAX])
        body = varint(rng.choice([1, 2])) + varint(blocks) + b"".join(
            string(rand_bytes(rng, rng.choice([0, 10, 200, 3000]))) + string(rand_bytes(rng, rng.choice([0, 64, 72, 161])))
            for _ in range(min(blocks, 3))) + string(rand_bytes(rng, rng.choice([0, 32, 33])))
        return t, string(body if rng.random() < 0.8 else rand_bytes(rng, rng.choice([0, 1, 65_537]))), b""
    if t == 0x23:
        return t, rand_bytes(rng, 16) + varint(rng.choice([0, 31, 256])) + varint(rng.getrandbits(32)), b""
    if t == 0x24:
        count = rng.choice([0, 1, 4096, 4097, VARINT_MAX])
        lst = rand_bytes(rng, 32) + varint(rng.getrandbits(16)) + varint(count) + rand_bytes(rng, 16 * min(count, 4)) \
            + string(rand_bytes(rng, rng.choice([0, 300]))) + string(rand_bytes(rng, rng.choice([0, 72])))
        return t, string(lst), b""
    return t, rand_bytes(rng, rng.choice([31, 32, 33])), b""


GENERATORS.update({"GRANT": g_grant})


def g_routing_adverts(rng, c):
    """ROUTING_ADVERTS (0x26): certCount, certificates, advertCount, adverts (PROTOCOL.md "Signed
    routing adverts"). Bodies are signed with a key that is not the certificate's (or garbage), and
    claim the fuzzer's own node id or another: a node must drop every one of them."""
    me = int.from_bytes(c.my_node_id[:8], "big")
    certs = [rand_bytes(rng, rng.choice([1, 40, 500])) for _ in range(rng.choice([0, 1, 2]))]
    if rng.random() < 0.05:
        certs.append(rand_bytes(rng, 8193))
    adverts = []
    for _ in range(rng.choice([0, 1, 3, 40])):
        node = rng.choice([c.my_node_id, rand_bytes(rng, 32), b"\x00" * 32])
        body = node + varint(extreme_varint(rng)) + varint(rng.choice([0, int(time.time() * 1000) + 60_000, VARINT_MAX]))
        body += u16(extreme_u16(rng)) + f32(rng.choice([0.0, 45.0, 91.0, float("nan")])) + f32(rng.choice([0.0, 180.0, -181.0]))
        body += b"".join(f32(rng.choice([0.0, 1.0, 1e6, 1000001.0, -3.4e38])) for _ in range(4))
        body += f32(rng.choice([0.0, 1e6, -1.0])) + f32(rng.choice([0.0, 0.5, 1.5])) + f32(rng.choice([0.0, 12345.0, -0.5, float("inf")]))
        body += f32(rng.choice([0.0, 1e9]))
        links = [u64(rng.choice([me, rng.getrandbits(64), int.from_bytes(node[:8], "big")])) + f32(rng.choice([0.0, 161.8, 1e6, 1000001.0])) + f32(0.0)
                 for _ in range(rng.choice([0, 1, 32, 33]))]
        body += varint(len(links)) + b"".join(links)
        if rng.random() < 0.05:
            body += rand_bytes(rng, 1100)
        sig = sign_p256(c.owner, b"STOQ routing advert v1\x00" + body) if rng.random() < 0.8 else rand_bytes(rng, rng.choice([0, 64, 81]))
        digest = hashlib.sha256(rng.choice(certs)).digest() if certs and rng.random() < 0.8 else rand_bytes(rng, 32)
        adverts.append(u8(rng.choice([0, 1, 255])) + varint(rng.choice([0, 0xFFFF_FFFF, 0x1_0000_0000])) + digest + string(body) + string(sig))
    count_c = len(certs) if rng.random() < 0.9 else rng.choice([256, 257, VARINT_MAX])
    count_a = len(adverts) if rng.random() < 0.9 else rng.choice([256, 257, VARINT_MAX])
    payload = varint(count_c) + b"".join(string(x) for x in certs) + varint(count_a) + b"".join(adverts)
    return 0x26, payload, b""


GENERATORS["ROUTING_ADVERTS"] = g_routing_adverts


# --------------------------------------------------------------------------- enrolment (0x28-0x29)


def g_enrol(rng, c):
    """ENROL_CHALLENGE (0x28) / ENROL_PROOF (0x29): exactly 32 bytes; other lengths are malformed."""
    return rng.choice([0x28, 0x29]), rand_bytes(rng, rng.choice([0, 1, 31, 32, 32, 33, 64])), b""


GENERATORS.update({"ENROL": g_enrol})


# --------------------------------------------------------------------------- audit head (0x2C-0x2D)


def g_audit_head(rng, c):
    """AUDIT_HEAD_REQUEST (0x2C): empty, or junk (malformed); AUDIT_HEAD (0x2D, an answer): a
    length-prefixed head of 0…8405 bytes."""
    if rng.random() < 0.6:
        return 0x2C, rand_bytes(rng, rng.choice([0, 0, 1, 16, 17])), b""
    return 0x2D, string(rand_bytes(rng, rng.choice([0, 1, 100, 8404, 8405]))), b""


GENERATORS.update({"AUDIT_HEAD": g_audit_head})


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random edits: bit flips, byte sets, inserts, deletes, a cut, a splice of junk."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x40, 0xC0, rng.randrange(256)])
        elif op == 2:
            i = rng.randint(0, len(b))
            b[i:i] = rand_bytes(rng, rng.randint(1, 8))
        elif op == 3 and b:
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 8)]
        elif op == 4 and b:
            del b[rng.randrange(len(b)) :]
        else:
            i = rng.randint(0, len(b))
            b[i:i] = b"\xff" * rng.randint(1, 16)
    return bytes(b)
