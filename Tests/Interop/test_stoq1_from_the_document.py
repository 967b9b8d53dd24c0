"""docs/PROTOCOL.md is enough to build a peer: `stoq1_client.py`, written from the document
alone, reads the test vectors and a running `stoq node`.

    python3 -m pytest -q Tests/Interop/test_stoq1_from_the_document.py          # vectors only
    STOQ_BIN=$PWD/.build/release/stoq python3 -m pytest -q Tests/Interop -k document

The vector tests need no stoq binary. The node test runs `stoq certs`, `stoq put` and
`stoq node` from STOQ_BIN, then fetches, decrypts and restores the test tree over QUIC with the
independent client, and checks the node's answers the document states (PING, WANT/HAVE, errors
and resets, node id pinning).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import stoq1_client as c

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "test-vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def tree_store() -> dict[bytes, bytes]:
    d = load("content-tree.json")
    store = {bytes.fromhex(m["id"]): bytes.fromhex(m["bytes"]) for m in d["manifests"]}
    store.update({bytes.fromhex(ch["id"]): bytes.fromhex(ch["stored"]) for ch in d["chunks"]})
    return store


def copy_inputs(target: Path) -> None:
    """The test tree with the modes the vectors list (git keeps modes loosely)."""
    d = load("content-tree.json")
    target.mkdir()
    for entry in sorted(d["inputs"], key=lambda e: e["path"].count("/")):
        path = target / entry["path"]
        if entry["kind"] == "directory":
            path.mkdir()
        else:
            shutil.copyfile(VECTORS / "content-tree" / entry["path"], path)
    for entry in d["inputs"]:
        os.chmod(target / entry["path"], int(entry["mode"], 8))


def check_restored(out: Path) -> None:
    for entry in load("content-tree.json")["inputs"]:
        path = out / entry["path"]
        assert os.stat(path).st_mode & 0o7777 == int(entry["mode"], 8), entry["path"]
        if entry["kind"] == "file":
            assert path.read_bytes() == (VECTORS / "content-tree" / entry["path"]).read_bytes(), entry["path"]


# --------------------------------------------------------------------------- the vectors


def test_the_document_reads_the_content_vectors(tmp_path: Path) -> None:
    d = load("content-tree.json")
    store = tree_store()
    for cid, data in store.items():
        assert c.sha256(data) == cid
    root = c.content_id_bytes(d["content_id"])
    assert root.hex() == d["content_id_hex"]
    assert c.content_id_text(root) == d["content_id"]
    assert c.content_id_bytes(d["content_id"].upper().replace("STOQ:", "stoq:")) == root
    secret = bytes.fromhex(d["publisher"]["secret"])
    assert c.read_key(secret).hex() == d["publisher"]["read_key"]
    stats = c.restore(root, store.__getitem__, secret, tmp_path / "out")
    assert stats["compressed_chunks"] == sum(ch["compressed"] for ch in d["chunks"]) > 0
    check_restored(tmp_path / "out")
    order = c.have_order(root, lambda i: c.decode_manifest(store[i]))
    assert [o.hex() for o in order] == d["have_order"]


def test_the_document_reads_the_message_vectors() -> None:
    tree = load("content-tree.json")
    messages = {m["name"]: m for m in load("wire.json")["messages"]}
    for m in messages.values():
        ftype, payload, rest = c.split_frame(bytes.fromhex(m["hex"]))
        assert rest == b""
    hello = next(ch for ch in tree["chunks"] if ch["path"] == "hello.txt")
    assert messages["get_chunk"]["hex"] == c.frame(c.GET_CHUNK, bytes.fromhex(hello["id"]) + c.varint(0) + c.varint(0)).hex()
    assert messages["ping"]["hex"] == c.frame(c.PING, bytes.fromhex("0123456789abcdef") + c.varint(0)).hex()
    root = bytes.fromhex(tree["content_id_hex"])
    assert messages["want"]["hex"] == c.frame(c.WANT, root + c.varint(0)).hex()
    # HAVE of hello.txt and data.bin's first two chunks: bits by have_order.
    wanted = {hello["id"]} | {ch["id"] for ch in tree["chunks"] if ch["path"] == "data.bin" and ch["offset"] < 1866}
    bits = bytearray((len(tree["have_order"]) + 7) // 8)
    for i, cid in enumerate(tree["have_order"]):
        if cid in wanted:
            bits[i // 8] |= 0x80 >> (i % 8)
    assert messages["have"]["hex"] == c.frame(c.HAVE, root + c.varint(len(tree["have_order"])) + bytes(bits)).hex()


def test_the_document_verifies_the_name_record() -> None:
    v = load("name-record.json")
    record = bytes.fromhex(v["record"])
    r = c.Reader(record, "record")
    assert r.take(4) == b"STNR" and r.u(1) == 1
    name = r.take(r.u(1)).decode()
    content, version, ttl, owner, signature = r.take(32), r.u(8), r.u(4), r.take(65), r.take(64)
    r.end()
    assert (name, c.content_id_text(content), version, ttl) == (v["name"], v["content_id"], v["version"], v["ttl_seconds"])
    signed = b"STOQ name record v1" + record[:-64]
    assert signed.hex() == v["signed_bytes"]
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), owner)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(der, signed, ec.ECDSA(hashes.SHA256()))  # raises when it does not verify


# --------------------------------------------------------------------------- a running node


def stoq_bin() -> str:
    binary = os.environ.get("STOQ_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip("STOQ_BIN is not set to a stoq binary")
    return binary


def run(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


class Nodes:
    """`stoq node` processes, each in its own session; all killed by `stop()`."""

    def __init__(self, stoq: str, certs: Path):
        self.stoq, self.certs, self.processes = stoq, certs, []

    def start(self, name: str, store: Path, *extra: str) -> str:
        proc = subprocess.Popen(
            [self.stoq, "node", "--name", name, "--listen", "[::1]:0", "--cert", str(self.certs / f"{name}.pem"),
             "--key", str(self.certs / f"{name}.key"), "--ca", str(self.certs / "ca.pem"), "--store", str(store), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.processes.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(rf"ready {name} (\[[0-9a-f:]+\]:\d+)", line)
            if m:
                return m.group(1)
        raise AssertionError(f"{name} did not print its ready line")

    def stop(self) -> None:
        for proc in self.processes:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_the_document_talks_to_stoq_nodes(tmp_path: Path) -> None:
    stoq = stoq_bin()
    certs, store = tmp_path / "certs", tmp_path / "store"
    run(stoq, "certs", "init-ca", "--out", str(certs))
    node_ids = {}
    # "client" beside ca.pem is what a node takes as its operator by default: names are published
    # with it (NAME_PUBLISH is closed to other certificates, docs/PROTOCOL.md "Access grants").
    for name in ("origin", "edge", "reader", "client"):
        out = run(stoq, "certs", "issue", "--ca-dir", str(certs), "--name", name, "--out", str(certs))
        node_ids[name] = bytes.fromhex(re.search(r"id ([0-9a-f]{64})", out).group(1))
    # The vectors' publisher key, so the node's chunks decrypt with the documented derivation.
    store.mkdir()
    secret = bytes.fromhex(load("content-tree.json")["publisher"]["secret"])
    (store / "publisher.key").write_bytes(secret)
    os.chmod(store / "publisher.key", 0o600)
    copy_inputs(tmp_path / "tree")
    put = run(stoq, "put", "--store", str(store), str(tmp_path / "tree"))
    content = re.search(r"(stoq:[a-z2-7]{52})", put).group(1)

    nodes = Nodes(stoq, certs)
    try:
        origin = nodes.start("origin", store, "--role", "origin")
        edge = nodes.start("edge", tmp_path / "edge-store", "--role", "edge", "--upstream", origin)
        cert, key, ca = str(certs / "reader.pem"), str(certs / "reader.key"), str(certs / "ca.pem")
        asyncio.run(asyncio.wait_for(talk_to_origin(origin, (cert, key, ca), content, secret, node_ids, tmp_path), 120))
        operator = (str(certs / "client.pem"), str(certs / "client.key"), ca)
        asyncio.run(asyncio.wait_for(names(origin, operator, content, outsider=(cert, key, ca)), 120))
        asyncio.run(asyncio.wait_for(talk_to_edge(edge, (cert, key, ca), content, secret, tmp_path), 120))
    finally:
        nodes.stop()


async def talk_to_origin(address: str, tls: tuple, content: str, secret: bytes, node_ids: dict, tmp_path: Path) -> None:
    # Pinning: the wrong node id is refused by the client, the right one accepted.
    with pytest.raises(ConnectionError):
        await c.connect(address, *tls, expected_node=node_ids["reader"])
    peer, manager = await c.connect(address, *tls, expected_node=node_ids["origin"])
    try:
        root = c.content_id_bytes(content)
        pong = await peer.ping(0x0123456789ABCDEF)
        assert pong["nonce"] == 0x0123456789ABCDEF and pong["echo"] == 0

        chunks = await c.fetch_all(peer, root)
        c.restore(root, chunks.__getitem__, secret, tmp_path / "restored")
        check_restored(tmp_path / "restored")

        # The origin holds every data chunk: a HAVE of exactly that many bits, all set.
        order = c.have_order(root, lambda i: c.decode_manifest(chunks[i]))
        count, bits, flags = await peer.want(root)
        assert (count, flags) == (len(order), 0)
        assert bits == all_set(count)
        unknown = await peer.want(bytes(32))  # a content this node does not hold
        assert unknown[:2] == ("error", 3)

        # Errors the document lists.
        missing = await peer.request(c.frame(c.GET_CHUNK, bytes(32) + c.varint(0) + c.varint(0)))
        assert missing.frames == [(c.CHUNK_HEADER, bytes([1, 0, 0, 0]))]
        beyond = await peer.request(c.frame(c.GET_CHUNK, root + c.varint(1 << 20) + c.varint(0)))
        assert beyond.frames[0][1][0] == 2
        assert await error_code(peer, c.frame(c.NAME_RESOLVE, b"\x07example\x02")) == 1  # subscribe = 2
        assert await error_code(peer, c.frame(c.NAME_RESOLVE, b"\x07example\x00")) == 3  # unknown name
        hello = c.varint(1) + peer.node_id + c.varint(0) + bytes(16) + c.varint(4) + c.varint(0)
        assert await error_code(peer, c.frame(0x01, hello)) == 1  # a well-formed HELLO is not a request
        assert (await peer.request(c.frame(0x01, b""))).reset == 1  # a malformed one is reset
        for ftype in (0x1003, 0x3F):  # an extension type, an unknown core type: reset 0x1
            answer = await peer.request(c.frame(ftype, b"\x01\x02"))
            assert (answer.frames, answer.reset) == ([], 1)
        assert await error_code(peer, c.frame(0x12, b"\x00\x03::1\x01")) == 1  # this node does not relay
        assert (await peer.ping(7))["nonce"] == 7  # the connection still serves
    finally:
        await manager.__aexit__(None, None, None)


async def names(address: str, tls: tuple, content: str, outsider: tuple | None = None) -> None:
    """A record signed as the document says is published, resolved, and its next version pushed
    as INVALIDATE to a subscriber, which answers with an empty stream."""
    from cryptography.hazmat.primitives.asymmetric import ec

    root = c.content_id_bytes(content)
    owner = ec.generate_private_key(ec.SECP256R1())
    invalidations = []

    def on_request(data: bytes) -> bytes | None:
        ftype, payload, rest = c.split_frame(data)
        if ftype != 0x08 or rest:
            return None
        r = c.Reader(payload, "INVALIDATE")
        invalidations.append((r.string(255), r.varint()))
        r.end()
        return b""  # taken: FIN and no frame

    publisher, closer1 = await c.connect(address, *tls)
    subscriber, closer2 = await c.connect(address, *tls, on_request=on_request)
    try:
        v1 = c.sign_name_record("docs-example", root, 1, 300, owner)
        if outsider is not None:
            # A certificate that is neither operator nor publisher, with no grant: ERROR 7, and
            # nothing is bound (the operator's v1 below is still the name's first record).
            stranger, closer3 = await c.connect(address, *outsider)
            try:
                assert await published(stranger, v1) == ("error", 7)
            finally:
                await closer3.__aexit__(None, None, None)
        assert await published(publisher, v1) == (1, 0)
        answer = await subscriber.request(c.frame(c.NAME_RESOLVE, c.varint(12) + b"docs-example" + c.varint(1)))
        assert answer.frames == [(c.NAME_RECORD, c.varint(len(v1)) + v1)]
        v2 = c.sign_name_record("docs-example", root, 2, 300, owner)
        assert await published(publisher, v2) == (2, 1)
        assert invalidations == [("docs-example", 2)]
        assert await published(publisher, v2) == ("error", 4)  # not newer
        forged = c.sign_name_record("docs-example", root, 3, 300, owner)
        forged = forged[:-1] + bytes([forged[-1] ^ 1])
        assert await published(publisher, forged) == ("error", 4)
        other = c.sign_name_record("docs-example", root, 3, 300, ec.generate_private_key(ec.SECP256R1()))
        assert await published(publisher, other) == ("error", 4)  # another owner
        absent = c.sign_name_record("docs-example", bytes(32), 3, 300, owner)
        assert await published(publisher, absent) == ("error", 3)  # content not in the store
    finally:
        await closer1.__aexit__(None, None, None)
        await closer2.__aexit__(None, None, None)


async def published(peer: c.Peer, record: bytes):
    answer = await peer.request(c.frame(0x0F, c.varint(len(record)) + record))
    (ftype, payload), = answer.frames
    r = c.Reader(payload, "answer")
    if ftype == c.ERROR:
        return ("error", r.varint())
    assert ftype == 0x10
    return (r.varint(), r.varint())


async def talk_to_edge(address: str, tls: tuple, content: str, secret: bytes, tmp_path: Path) -> None:
    """An edge with an upstream answers WANT with the fill flag: none cached before, all after."""
    peer, manager = await c.connect(address, *tls)
    try:
        root = c.content_id_bytes(content)
        assert await peer.want(root) == (0, b"", 1)
        chunks = await c.fetch_all(peer, root)  # through the edge's upstream fills
        c.restore(root, chunks.__getitem__, secret, tmp_path / "via-edge")
        check_restored(tmp_path / "via-edge")
        count = len(c.have_order(root, lambda i: c.decode_manifest(chunks[i])))
        assert await peer.want(root) == (count, all_set(count), 1)
    finally:
        await manager.__aexit__(None, None, None)


def all_set(count: int) -> bytes:
    return bytes([0xFF] * (count // 8) + ([(0xFF << (8 - count % 8)) & 0xFF] if count % 8 else []))


async def error_code(peer: c.Peer, request: bytes) -> int:
    answer = await peer.request(request)
    (ftype, payload), = answer.frames
    assert ftype == c.ERROR, f"expected ERROR, got {ftype:#x}"
    return c.Reader(payload, "ERROR").varint()


def test_the_document_opens_sealed_content(tmp_path: Path) -> None:
    """A sealed content (STQE, `stoq put --sealed`) read from a node with nothing but the document:
    the reader envelope of a version 2 ticket opened with the reader's X25519 key (HPKE as the
    document gives it), the sealed index walked for the chunks and the HAVE bits, the sealed root
    and each sealed manifest opened with the manifest key, the key tables with the content key."""
    stoq = stoq_bin()
    certs, store = tmp_path / "certs", tmp_path / "store"
    run(stoq, "certs", "init-ca", "--out", str(certs))
    for name in ("origin", "reader"):
        run(stoq, "certs", "issue", "--ca-dir", str(certs), "--name", name, "--out", str(certs))
    copy_inputs(tmp_path / "tree")
    put = run(stoq, "put", "--sealed", "--store", str(store), str(tmp_path / "tree"))
    content = re.search(r"(stoq:[a-z2-7]{52})", put).group(1)
    root = c.content_id_bytes(content)
    keyring = (store / "private.keys").read_bytes()
    assert keyring[:32] == root
    publisher_k = keyring[32:64]
    reader_key = tmp_path / "reader.x25519"
    reader_pub = tmp_path / "reader.pub"
    reader_pub.write_text(run(stoq, "reader", "key", "--key-file", str(reader_key)))

    nodes = Nodes(stoq, certs)
    try:
        origin = nodes.start("origin", store, "--role", "origin")
        cert, key, ca = str(certs / "reader.pem"), str(certs / "reader.key"), str(certs / "ca.pem")
        ticket = run(stoq, "share", content, "--store", str(store), "--node", origin, "--cert", cert, "--key", key, "--ca", ca,
                     "--reader", str(reader_pub)).strip()
        envelope_content, k = c.open_reader_envelope(c.ticket_envelope(ticket), reader_key.read_bytes())
        assert (envelope_content, k) == (root, publisher_k), "the envelope opens to the publisher's content key"
        asyncio.run(asyncio.wait_for(read_sealed(origin, (cert, key, ca), root, k, tmp_path), 120))
    finally:
        nodes.stop()


async def read_sealed(address: str, tls: tuple, root: bytes, k: bytes, tmp_path: Path) -> None:
    peer, manager = await c.connect(address, *tls)
    try:
        chunks = await c.fetch_all_sealed(peer, root)
        order = c.sealed_chunk_order(root, chunks.__getitem__)
        # No manifest travels in the clear; the index holds no name of the tree.
        assert not any(chunks[i][:4] in (b"STQD", b"STQM") for i in order)
        assert b"hello" not in chunks[root] and b"docs" not in chunks[root]
        c.restore_sealed(root, chunks.__getitem__, k, tmp_path / "sealed-restored")
        check_restored(tmp_path / "sealed-restored")
        # The node's HAVE bits are the index's kind 1 entries, all held.
        count, bits, flags = await peer.want(root)
        assert (count, flags) == (len(order), 0)
        assert bits == all_set(count)
        # A wrong content key opens nothing.
        with pytest.raises(Exception):
            c.restore_sealed(root, chunks.__getitem__, bytes(32), tmp_path / "wrong")
    finally:
        await manager.__aexit__(None, None, None)
