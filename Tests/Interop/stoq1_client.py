#!/usr/bin/env python3
"""A `stoq/1` client written from docs/PROTOCOL.md alone, to check that the document is enough.

It shares no code with STOQ: frames and varints, content ids, manifests (with their Merkle
roots), the walk that numbers HAVE bits, key derivation, key tables and chunk decryption, and
the requests (GET_CHUNK, WANT, PING, NAME_RESOLVE) over QUIC with aioquic. Certificates are
checked the way the document says: the chain against the network CA without any host name,
then the node id (SHA-256 of the leaf's SubjectPublicKeyInfo) pinned when it is known.

    python3 stoq1_client.py --peer '[::1]:4433' --cert reader.pem --key reader.key --ca ca.pem \
        --publisher-key STORE/publisher.key --output OUT stoq:...

Where the document is silent or wrong, this file should fail; fix the document, not this file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import ctypes.util
import hashlib
import hmac
import os
import ssl
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# ----------------------------------------------------------------------------- encoding


def varint(value: int) -> bytes:
    """QUIC variable-length integer, shortest form."""
    if value < 1 << 6:
        return bytes([value])
    if value < 1 << 14:
        return struct.pack(">H", value | 0x4000)
    if value < 1 << 30:
        return struct.pack(">I", value | 0x8000_0000)
    if value < 1 << 62:
        return struct.pack(">Q", value | 0xC000_0000_0000_0000)
    raise ValueError("varint out of range")


class Reader:
    """Bounded reader over one payload: every read checks what is left."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.left() < n:
            raise ValueError(f"{self.what}: truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        if self.left() < 1:
            raise ValueError(f"{self.what}: truncated varint")
        length = 1 << (self.data[self.pos] >> 6)
        raw = bytearray(self.take(length))
        raw[0] &= 0x3F
        return int.from_bytes(raw, "big")

    def u(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def string(self, bound: int) -> str:
        n = self.varint()
        if n > bound:
            raise ValueError(f"{self.what}: string of {n} bytes, bound {bound}")
        return self.take(n).decode("utf-8")

    def end(self) -> None:
        if self.left():
            raise ValueError(f"{self.what}: {self.left()} trailing bytes")


def frame(ftype: int, payload: bytes) -> bytes:
    return varint(ftype) + varint(len(payload)) + payload


def split_frame(data: bytes) -> tuple[int, bytes, bytes] | None:
    """(type, payload, rest) of the first whole frame, or None when more bytes are needed."""
    r = Reader(data, "frame")
    try:
        ftype, length = r.varint(), r.varint()
    except ValueError:
        return None
    if r.left() < length:
        return None
    payload = r.take(length)
    return ftype, payload, data[r.pos:]


GET_CHUNK, CHUNK_HEADER, ERROR, CHUNK_PENDING = 0x06, 0x07, 0x09, 0x0C
PING, PONG, HAVE, WANT = 0x02, 0x03, 0x04, 0x05
NAME_RESOLVE, NAME_RECORD = 0x0D, 0x0E

# ----------------------------------------------------------------------------- ids

B32 = "abcdefghijklmnopqrstuvwxyz234567"


def content_id_bytes(text: str) -> bytes:
    t = text.strip()
    if t.startswith("stoq:"):
        t = t[5:]
    if len(t) == 64:
        return bytes.fromhex(t)
    if len(t) != 52:
        raise ValueError("a content id is stoq: + 52 base32 characters")
    raw = base64.b32decode(t.upper() + "====")
    if len(raw) != 32 or base64.b32encode(raw).decode().rstrip("=").lower() != t.lower():
        raise ValueError("non-canonical content id")
    return raw


def content_id_text(raw: bytes) -> str:
    return "stoq:" + base64.b32encode(raw).decode().rstrip("=").lower()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def merkle_root(ids: list[bytes]) -> bytes:
    if not ids:
        return sha256(b"")
    level = [sha256(b"\x00" + i) for i in ids]
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]

# ----------------------------------------------------------------------------- manifests


@dataclass
class DirEntry:
    name: str
    mode: int
    kind: int  # 1 file, 2 directory
    content: bytes
    size: int


@dataclass
class FileManifest:
    kind: int  # 1 leaf, 2 node
    content_type: str
    total: int
    entries: list[tuple[bytes, int, int]]  # (id, offset, size)
    key_table: bytes = b""


def decode_manifest(data: bytes) -> list[DirEntry] | FileManifest:
    r = Reader(data, "manifest")
    magic = r.take(4)
    if magic == b"STQD":
        if r.u(1) != 1:
            raise ValueError("directory manifest version")
        count = r.u(4)
        if count > 65536:
            raise ValueError("too many entries")
        root = r.take(32)
        entries, previous = [], None
        for _ in range(count):
            n = r.u(2)
            if not 1 <= n <= 255:
                raise ValueError("name length")
            raw = r.take(n)
            name = raw.decode("utf-8")
            if name in (".", "..") or "/" in name or "\x00" in name:
                raise ValueError(f"bad name {name!r}")
            if previous is not None and not previous < raw:
                raise ValueError("names not strictly increasing")
            previous = raw
            mode, kind = r.u(4), r.u(1)
            if mode > 0o7777 or kind not in (1, 2):
                raise ValueError("mode or kind")
            entries.append(DirEntry(name, mode, kind, r.take(32), r.u(8)))
        r.end()
        if merkle_root([e.content for e in entries]) != root:
            raise ValueError("directory Merkle root")
        return entries
    if magic != b"STQM":
        raise ValueError("not a manifest")
    if r.u(1) != 1:
        raise ValueError("file manifest version")
    kind = r.u(1)
    if kind not in (1, 2):
        raise ValueError("file manifest kind")
    ct_len = r.u(1)
    if ct_len > 127:
        raise ValueError("content type length")
    ct = r.take(ct_len)
    if any(not 0x20 <= b < 0x7F for b in ct):
        raise ValueError("content type")
    total, count = r.u(8), r.u(4)
    if count > 65536 or (count == 0 and total != 0):
        raise ValueError("entry count")
    root = r.take(32)
    entries, expected = [], 0
    for _ in range(count):
        cid, offset = r.take(32), r.u(8)
        size = r.u(4) if kind == 1 else r.u(8)
        if size == 0 or (kind == 1 and size > 16 << 20) or offset != expected:
            raise ValueError("entry size or offset")
        expected += size
        entries.append((cid, offset, size))
    if expected != total:
        raise ValueError("entries do not add up to the total size")
    table = b""
    if kind == 1:
        n = r.u(4)
        if n != 28 + 32 * count and not (count == 0 and n == 0):
            raise ValueError("key table length")
        table = r.take(n)
    r.end()
    if merkle_root([e[0] for e in entries]) != root:
        raise ValueError("file Merkle root")
    return FileManifest(kind, ct.decode(), total, entries, table)


def have_order(root: bytes, manifest: callable) -> list[bytes]:
    """The HAVE bit order: the stack walk of PROTOCOL.md."""
    stack, seen, order, seen_data = [root], set(), [], set()
    while stack:
        mid = stack.pop()
        if mid in seen:
            continue
        seen.add(mid)
        m = manifest(mid)
        if isinstance(m, list):
            stack.extend(e.content for e in m)
        elif m.kind == 2:
            stack.extend(e[0] for e in m.entries)
        else:
            for cid, _, _ in m.entries:
                if cid not in seen_data:
                    seen_data.add(cid)
                    order.append(cid)
    return order

# ----------------------------------------------------------------------------- encryption


def read_key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"stoq read key v1").derive(secret)


def open_key_table(sealed: bytes, count: int, rkey: bytes) -> list[bytes]:
    if len(sealed) != 12 + 32 * count + 16:
        raise ValueError("key table size")
    plain = ChaCha20Poly1305(rkey).decrypt(sealed[:12], sealed[12:], None)
    if hmac.new(rkey, plain, hashlib.sha256).digest()[:12] != sealed[:12]:
        raise ValueError("key table nonce is not its synthetic IV")
    return [plain[i * 32:(i + 1) * 32] for i in range(count)]


_zstd = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
_zstd.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
_zstd.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_zstd.ZSTD_decompress.restype = ctypes.c_size_t
_zstd.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
_zstd.ZSTD_isError.argtypes = [ctypes.c_size_t]


def zstd_decompress(frame_bytes: bytes, expected: int) -> bytes:
    declared = _zstd.ZSTD_getFrameContentSize(frame_bytes, len(frame_bytes))
    if declared >= (1 << 64) - 2 or declared != expected:
        raise ValueError("zstd frame without the right content size")
    out = ctypes.create_string_buffer(max(expected, 1))
    n = _zstd.ZSTD_decompress(out, expected, frame_bytes, len(frame_bytes))
    if _zstd.ZSTD_isError(n) or n != expected:
        raise ValueError("zstd frame does not decompress")
    return out.raw[:expected]


def open_chunk(stored: bytes, key: bytes, size: int, secret: bytes | None = None) -> tuple[bytes, bool]:
    """(plaintext, compressed) of a stored data chunk; checks the key when `secret` is given."""
    message = ChaCha20Poly1305(key).decrypt(bytes(12), stored, None)
    flag, body = message[0], message[1:]
    if flag == 0:
        plain = body
    elif flag == 1:
        plain = zstd_decompress(body, size)
    else:
        raise ValueError("chunk flag")
    if len(plain) != size:
        raise ValueError("chunk size")
    if secret is not None and hmac.new(secret, sha256(plain), hashlib.sha256).digest() != key:
        raise ValueError("the chunk key is not HMAC(secret, SHA-256(plaintext))")
    return plain, flag == 1

# ----------------------------------------------------------------------------- restoring


def restore(root: bytes, fetch: callable, secret: bytes, out: Path, rkey: bytes | None = None,
            manifest: callable | None = None) -> dict:
    """Writes the content `root` to `out` (a directory or a file), fetching chunks with `fetch`
    (id -> bytes, already checked against the id). Returns counts. `rkey`: the key tables' key
    when it is not the publisher's read key (then chunk keys are not checked against `secret`);
    `manifest`: id -> manifest bytes, when manifests are sealed."""
    if rkey is None:
        rkey = read_key(secret)
    else:
        secret = None
    if manifest is None:
        manifest = fetch
    stats = {"files": 0, "directories": 0, "bytes": 0, "compressed_chunks": 0}

    def file_bytes(mid: bytes, depth: int) -> bytes:
        if depth > 16:
            raise ValueError("too deep")
        m = decode_manifest(manifest(mid))
        if not isinstance(m, FileManifest):
            raise ValueError("expected a file manifest")
        parts = []
        if m.kind == 2:
            for cid, _, size in m.entries:
                part = file_bytes(cid, depth + 1)
                if len(part) != size:
                    raise ValueError("sub-manifest size")
                parts.append(part)
        else:
            keys = open_key_table(m.key_table, len(m.entries), rkey)
            for (cid, _, size), key in zip(m.entries, keys):
                plain, compressed = open_chunk(fetch(cid), key, size, secret)
                stats["compressed_chunks"] += compressed
                parts.append(plain)
        data = b"".join(parts)
        if len(data) != m.total:
            raise ValueError("file size")
        return data

    def walk(mid: bytes, path: Path, mode: int | None, depth: int) -> None:
        m = decode_manifest(manifest(mid))
        if isinstance(m, list):
            path.mkdir(mode=0o700, exist_ok=True)
            stats["directories"] += 1
            for e in m:
                child = path / e.name
                if e.kind == 2:
                    walk(e.content, child, e.mode, depth + 1)
                else:
                    data = file_bytes(e.content, depth + 1)
                    child.write_bytes(data)
                    os.chmod(child, e.mode)
                    stats["files"] += 1
                    stats["bytes"] += len(data)
            os.chmod(path, 0o755 if mode is None else mode)
        else:
            path.write_bytes(file_bytes(mid, depth))
            stats["files"] += 1

    walk(root, out, None, 0)
    return stats

# ----------------------------------------------------------------------------- sealed content (STQE)

MANIFEST_KEY_INFO = b"stoq manifest key v1"
LABEL_MANIFEST = b"stoq sealed manifest"
LABEL_ROOT = b"stoq sealed root"


@dataclass
class SealedIndex:
    entries: list[tuple[int, bytes, int]]  # (kind 1 chunk / 2 inner index, id, size)
    sealed_root: bytes  # 60 bytes on the root, empty on an inner index


def decode_sealed_index(data: bytes) -> SealedIndex:
    r = Reader(data, "sealed index")
    if r.take(4) != b"STQE":
        raise ValueError("not a sealed index")
    if r.u(1) != 1:
        raise ValueError("sealed index version")
    count = r.u(4)
    if count > 65536:
        raise ValueError("too many entries")
    root = r.take(32)
    entries, seen = [], set()
    for _ in range(count):
        kind, cid, size = r.u(1), r.take(32), r.u(4)
        if kind not in (1, 2) or not 1 <= size <= (16 << 20) + 64:
            raise ValueError("sealed index entry kind or size")
        if cid in seen:
            raise ValueError("an id twice in one sealed index")
        seen.add(cid)
        entries.append((kind, cid, size))
    n = r.u(4)
    if n not in (0, 60):
        raise ValueError("sealed root length")
    sealed_root = r.take(n)
    r.end()
    if merkle_root([e[1] for e in entries]) != root:
        raise ValueError("sealed index Merkle root")
    return SealedIndex(entries, sealed_root)


def sealed_chunk_order(root: bytes, fetch: callable) -> list[bytes]:
    """The kind 1 entries of a sealed content in index order, inner indexes expanded in place
    (depth first), each id once: the chunks a node serves and the HAVE bit order."""
    order, seen = [], set()

    def walk(iid: bytes, depth: int, is_root: bool) -> None:
        if depth > 8:
            raise ValueError("sealed index too deep")
        index = decode_sealed_index(fetch(iid))
        if is_root != bool(index.sealed_root):
            raise ValueError("a root index needs a sealed root and an inner one must not have one")
        for kind, cid, _ in index.entries:
            if kind == 2:
                walk(cid, depth + 1, False)
            elif cid not in seen:
                seen.add(cid)
                order.append(cid)

    walk(root, 0, True)
    return order


def manifest_key(content_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MANIFEST_KEY_INFO).derive(content_key)


def open_sealed(meta_key: bytes, label: bytes, sealed: bytes) -> bytes:
    """nonce(12) ‖ ChaCha20-Poly1305(metaKey, nonce, plaintext, ad = label) ‖ tag, with the nonce
    checked to be the synthetic one (HMAC-SHA256(metaKey, label ‖ plaintext)[:12])."""
    if len(sealed) < 28:
        raise ValueError("sealed bytes too short")
    plain = ChaCha20Poly1305(meta_key).decrypt(sealed[:12], sealed[12:], label)
    if hmac.new(meta_key, label + plain, hashlib.sha256).digest()[:12] != sealed[:12]:
        raise ValueError("sealed nonce is not its synthetic IV")
    return plain


def sealed_root_manifest(root: bytes, fetch: callable, content_key: bytes) -> bytes:
    """The id of a sealed content's real root manifest, opened from its index."""
    index = decode_sealed_index(fetch(root))
    if not index.sealed_root:
        raise ValueError("the content's root index has no sealed root")
    real = open_sealed(manifest_key(content_key), LABEL_ROOT, index.sealed_root)
    if len(real) != 32:
        raise ValueError("a sealed root opens to a 32-byte manifest id")
    return real


def restore_sealed(root: bytes, fetch: callable, content_key: bytes, out: Path) -> dict:
    """Writes the sealed content `root` to `out` with its content key: the index's sealed root
    names the real root manifest; every manifest chunk is opened (STQD/STQM in the clear are
    accepted too); key tables open with the content key itself."""
    meta = manifest_key(content_key)
    real = sealed_root_manifest(root, fetch, content_key)

    def manifest_bytes(mid: bytes) -> bytes:
        stored = fetch(mid)
        if stored[:4] in (b"STQD", b"STQM"):
            return stored
        if stored[:4] == b"STQE":
            raise ValueError("a manifest names a sealed index as a child")
        return open_sealed(meta, LABEL_MANIFEST, stored)

    return restore(real, fetch, b"", out, rkey=content_key, manifest=manifest_bytes)

# ----------------------------------------------------------------------------- reader envelopes (HPKE)


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, n = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([n]), hashlib.sha256).digest()
        out += block
        n += 1
    return out[:length]


def open_reader_envelope(envelope: bytes, reader_private: bytes) -> tuple[bytes, bytes]:
    """(content id, content key) of a 145-byte reader envelope, opened with the reader's raw
    X25519 private key: RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
    ChaCha20-Poly1305, info "stoq content key v1" ‖ content id, ad the first 65 bytes."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    if len(envelope) != 145 or envelope[0] != 1:
        raise ValueError("a reader envelope is 145 bytes of version 1")
    content, reader, enc, sealed = envelope[1:33], envelope[33:65], envelope[65:97], envelope[97:145]
    sk = X25519PrivateKey.from_private_bytes(reader_private)
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if sha256(pk) != reader:
        raise ValueError("the envelope is wrapped for another reader")
    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    kem_suite = b"KEM" + (0x0020).to_bytes(2, "big")

    def extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return _hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)

    def expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        return _hkdf_expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length)

    shared = expand(kem_suite, extract(kem_suite, b"", b"eae_prk", dh), b"shared_secret", enc + pk, 32)
    suite = b"HPKE" + (0x0020).to_bytes(2, "big") + (0x0001).to_bytes(2, "big") + (0x0003).to_bytes(2, "big")
    info = b"stoq content key v1" + content
    context = b"\x00" + extract(suite, b"", b"psk_id_hash", b"") + extract(suite, b"", b"info_hash", info)
    secret = extract(suite, shared, b"secret", b"")
    key = expand(suite, secret, b"key", context, 32)
    nonce = expand(suite, secret, b"base_nonce", context, 12)
    plain = ChaCha20Poly1305(key).decrypt(nonce, sealed, envelope[:65])
    if len(plain) != 32:
        raise ValueError("a content key is 32 bytes")
    return content, plain


def ticket_envelope(text: str) -> bytes:
    """The reader envelope of a version 2 ticket (`stoq1` + base32)."""
    body = text.strip()[len("stoq1"):]
    raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    if raw[0] != 2 or sha256(raw[:-4])[:4] != raw[-4:]:
        raise ValueError("not a version 2 ticket, or its checksum fails")
    if raw[33:34] != b"\x01" or raw[34:66] != raw[1:33]:
        raise ValueError("the ticket's envelope is not for the ticket's content")
    return raw[33:178]

# ----------------------------------------------------------------------------- names

NAME_DOMAIN = b"STOQ name record v1"


def sign_name_record(name: str, content: bytes, version: int, ttl: int, owner) -> bytes:
    """A name record signed with `owner` (a cryptography P-256 private key)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    raw_name = name.encode()
    public = owner.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    body = b"STNR" + bytes([1, len(raw_name)]) + raw_name + content + struct.pack(">QI", version, ttl) + public
    r, s = decode_dss_signature(owner.sign(NAME_DOMAIN + body, ec.ECDSA(hashes.SHA256())))
    return body + r.to_bytes(32, "big") + s.to_bytes(32, "big")


# ----------------------------------------------------------------------------- QUIC


def node_id(cert: x509.Certificate) -> bytes:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256(spki)


@dataclass
class Answer:
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""
    reset: int | None = None


class Peer:
    """One connection to a STOQ node; one request per bidirectional stream."""

    def __init__(self, protocol, node: bytes):
        self.protocol = protocol
        self.node_id = node

    async def request(self, data: bytes, timeout: float = 10.0) -> Answer:
        """Sends one request and FIN; returns the answer's frames (CHUNK_HEADER ok: the raw bytes
        after it), or the reset code."""
        quic = self.protocol._quic
        sid = quic.get_next_available_stream_id()
        waiter = asyncio.get_running_loop().create_future()
        self.protocol.streams[sid] = [bytearray(), waiter, None]
        quic.send_stream_data(sid, data, end_stream=True)
        self.protocol.transmit()
        await asyncio.wait_for(waiter, timeout)
        buf, _, reset = self.protocol.streams.pop(sid)
        answer = Answer(reset=reset)
        data = bytes(buf)
        while data:
            split = split_frame(data)
            if split is None:
                raise ValueError("the answer ends inside a frame")
            ftype, payload, data = split
            answer.frames.append((ftype, payload))
            if ftype == CHUNK_HEADER and Reader(payload, "header").varint() == 0:
                answer.raw = data
                break
        return answer

    async def get_chunk(self, cid: bytes) -> bytes:
        answer = await self.request(frame(GET_CHUNK, cid + varint(0) + varint(0)))
        for ftype, payload in answer.frames:
            if ftype == CHUNK_PENDING:
                continue
            if ftype == CHUNK_HEADER:
                r = Reader(payload, "CHUNK_HEADER")
                status, total, offset, length = r.varint(), r.varint(), r.varint(), r.varint()
                r.end()
                if status != 0:
                    raise LookupError(f"chunk {cid.hex()[:12]}: status {status}")
                if len(answer.raw) != length or total != length or offset != 0:
                    raise ValueError("chunk body length")
                if sha256(answer.raw) != cid:
                    raise ValueError("chunk does not match its id")
                return answer.raw
            raise ValueError(f"unexpected frame {ftype:#x} in a GET_CHUNK answer")
        raise ValueError(f"no CHUNK_HEADER (reset {answer.reset})")

    async def ping(self, nonce: int) -> dict:
        answer = await self.request(frame(PING, struct.pack(">Q", nonce) + varint(0)))
        (ftype, payload), = answer.frames
        if ftype != PONG:
            raise ValueError("PING not answered with PONG")
        r = Reader(payload, "PONG")
        pong = {"nonce": r.u(8), "echo": r.varint(), "load": r.varint(), "bandwidth": r.varint(), "active": r.varint()}
        r.end()
        if pong["nonce"] != nonce or pong["load"] > 1000:
            raise ValueError("bad PONG")
        return pong

    async def want(self, content: bytes) -> tuple[int, bytes, int] | tuple[str, int, str]:
        """(count, bitfield, flags) of the HAVE answer, or ("error", code, message)."""
        answer = await self.request(frame(WANT, content + varint(0)))
        (ftype, payload), = answer.frames
        r = Reader(payload, "answer")
        if ftype == ERROR:
            return ("error", r.varint(), r.string(1024))
        if ftype != HAVE or r.take(32) != content:
            raise ValueError("WANT not answered with HAVE for the content")
        count = r.varint()
        bits = r.take((count + 7) // 8)
        flags = r.varint() if r.left() else 0
        r.end()
        return count, bits, flags


async def fetch_all(peer: Peer, root: bytes) -> dict[bytes, bytes]:
    """Every chunk of a content (manifests first, then their children), each checked against
    its id. Sequential: this is a checker, not a fetcher."""
    cache: dict[bytes, bytes] = {}
    pending: list[tuple[bytes, bool]] = [(root, True)]  # (id, is a manifest)
    while pending:
        cid, is_manifest = pending.pop()
        if cid in cache:
            continue
        cache[cid] = await peer.get_chunk(cid)
        if not is_manifest:
            continue
        m = decode_manifest(cache[cid])
        if isinstance(m, list):
            pending += [(e.content, True) for e in m]
        else:
            pending += [(e[0], m.kind == 2) for e in m.entries]
    return cache


async def fetch_all_sealed(peer: Peer, root: bytes) -> dict[bytes, bytes]:
    """Every chunk of a sealed content: its indexes, then each kind 1 entry (data chunks and
    sealed manifests, which a node cannot tell apart), each checked against its id."""
    cache: dict[bytes, bytes] = {}
    pending = [root]
    while pending:
        iid = pending.pop()
        cache[iid] = await peer.get_chunk(iid)
        pending += [cid for kind, cid, _ in decode_sealed_index(cache[iid]).entries if kind == 2 and cid not in cache]
    for cid in sealed_chunk_order(root, cache.__getitem__):
        if cid not in cache:
            cache[cid] = await peer.get_chunk(cid)
    return cache


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def connect(address: str, cert: str, key: str, ca: str, expected_node: bytes | None = None, on_request=None):
    """Connects with mutual TLS; verifies the server's chain against `ca` with no host name,
    then pins `expected_node` when given. `on_request(bytes) -> bytes | None` answers the
    streams the node opens (None: reset). Returns (Peer, closer)."""
    from aioquic.asyncio import QuicConnectionProtocol
    from aioquic.asyncio.client import connect as quic_connect
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

    class Protocol(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.streams: dict[int, list] = {}
            self.incoming: dict[int, bytearray] = {}
            self.on_request = on_request

        def quic_event_received(self, event):
            if isinstance(event, StreamDataReceived):
                entry = self.streams.get(event.stream_id)
                if entry is None:
                    # A request the node opened (INVALIDATE to a subscriber): answered by
                    # `on_request` once whole, else reset with 0x1.
                    if self.on_request is None:
                        self._quic.reset_stream(event.stream_id, 0x1)
                        return
                    pending = self.incoming.setdefault(event.stream_id, bytearray())
                    pending += event.data
                    if event.end_stream:
                        answer = self.on_request(bytes(self.incoming.pop(event.stream_id)))
                        if answer is None:
                            self._quic.reset_stream(event.stream_id, 0x1)
                        else:
                            self._quic.send_stream_data(event.stream_id, answer, end_stream=True)
                        self.transmit()
                    return
                entry[0] += event.data
                if event.end_stream and not entry[1].done():
                    entry[1].set_result(None)
            elif isinstance(event, StreamReset):
                entry = self.streams.get(event.stream_id)
                if entry is not None:
                    entry[2] = event.error_code
                    if not entry[1].done():
                        entry[1].set_result(None)
            elif isinstance(event, ConnectionTerminated):
                for entry in self.streams.values():
                    if not entry[1].done():
                        entry[1].set_exception(ConnectionError(event.reason_phrase))

    configuration = QuicConfiguration(is_client=True, alpn_protocols=["stoq/1"])
    configuration.load_cert_chain(cert, key)
    # The chain is checked below, without a host name (node certificates carry no IP SAN).
    configuration.verify_mode = ssl.CERT_NONE
    configuration.server_name = None
    host, port = parse_address(address)
    manager = quic_connect(host, port, configuration=configuration, create_protocol=Protocol, wait_connected=True)
    protocol = await manager.__aenter__()
    tls = protocol._quic.tls
    leaf = tls._peer_certificate
    chain = list(getattr(tls, "_peer_certificate_chain", []) or [])
    verify_chain(leaf, chain, ca)
    nid = node_id(leaf)
    if expected_node is not None and nid != expected_node:
        await manager.__aexit__(None, None, None)
        raise ConnectionError(f"{address} is node {nid.hex()[:16]}, not the one expected")
    return Peer(protocol, nid), manager


def verify_chain(leaf: x509.Certificate, intermediates: list, ca_path: str) -> None:
    """The leaf chains to the network CA (signatures, validity now), no name checked."""
    from cryptography.x509.verification import PolicyBuilder, Store

    roots = x509.load_pem_x509_certificates(Path(ca_path).read_bytes())
    verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
    verifier.verify(leaf, intermediates)


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("content")
    p.add_argument("--peer", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--publisher-key", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--node-id", help="pin the peer's node id (64 hex)")
    a = p.parse_args()
    secret = Path(a.publisher_key).read_bytes()
    if len(secret) != 32:
        raise SystemExit("publisher.key must be 32 bytes")
    peer, manager = await connect(a.peer, a.cert, a.key, a.ca, bytes.fromhex(a.node_id) if a.node_id else None)
    try:
        root = content_id_bytes(a.content)
        cache = await fetch_all(peer, root)
        stats = restore(root, cache.__getitem__, secret, Path(a.output))
        print(f"restored {content_id_text(root)}: {stats}")
    finally:
        await manager.__aexit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
