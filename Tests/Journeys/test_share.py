"""Sharing with one string (issue 13 §5), as a publisher and a reader meet it.

An origin runs with `--public-read`; the publisher prints a ticket with `stoq share`; a reader in
a directory with no certificate, no CA file and no store runs `stoq get TICKET -o OUT` with no other
flag and gets an identical tree. An anonymous client is refused STATUS (ERROR 5, forbidden); a node
without `--public-read` refuses the anonymous reader with a message that says so; a ticket whose
key was altered fails before any data chunk is fetched; a ticket naming another CA is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.request
from pathlib import Path

from conftest import Procs, User, assert_same_tree, content_id, make_tree, run

TICKET = re.compile(r"^stoq1[a-z2-7]+$")


def served_bytes(admin: str) -> int:
    with urllib.request.urlopen(f"http://{admin}/status", timeout=10) as r:
        return int(json.load(r)["served"]["bytes"])


def with_key(ticket: str, key: bytes) -> str:
    """The same ticket with another read key (and a checksum that matches again)."""
    body = ticket[len("stoq1"):]
    raw = bytearray(base64.b32decode(body.upper() + "=" * (-len(body) % 8)))
    raw[33:65] = key
    raw[-4:] = hashlib.sha256(bytes(raw[:-4])).digest()[:4]
    return "stoq1" + base64.b32encode(bytes(raw)).decode().rstrip("=").lower()


def test_share_and_get_ticket(user: User, tmp_path: Path, procs: Procs) -> None:
    tree = make_tree(tmp_path / "tree", seed=13, big=1_500_000)
    store = tmp_path / "stores" / "share-origin"
    cid = content_id(user.ok("put", "--public", tree, "--store", store).stdout)
    # share-publisher publishes a name below: the origin lists it (names are closed by default).
    origin = user.node(procs, "share-origin", "--role", "origin", "--public-read", "--admin", "0",
                       "--publisher", user.cert("share-publisher")[0], store=store)
    admin = re.search(r"admin=(\[[0-9a-f:]+\]:\d+)", origin.proc.stdout())

    # The publisher: one line on stdout, the ticket.
    shared = user.ok("share", cid, "--store", store, "--node", origin.address, "--ca", user.ca)
    ticket = shared.stdout.strip()
    assert TICKET.match(ticket) and shared.stdout.count("\n") == 1, shared.stdout

    # The reader: a fresh directory, a fresh HOME, nothing but the ticket.
    reader = tmp_path / "reader"
    reader.mkdir()
    env = dict(user.env, HOME=str(reader))
    got = run([user.stoq, "get", ticket, "-o", "out"], env, cwd=reader, timeout=120)
    assert got.rc == 0, got.stderr
    assert_same_tree(tree, reader / "out")
    assert sorted(p.name for p in reader.iterdir()) == ["out"], "the reader kept nothing but its output"

    # A public published name needs only the name, a provider and the CA (no certificate, no key).
    user.ok("name", "publish", "shared-tree", cid, "--node", origin.address, "--public", *user.tls("share-publisher"))
    named_home = tmp_path / "named"
    named_home.mkdir()
    named = run([user.stoq, "get", "shared-tree", "-o", "out", "--peers", origin.address, "--ca", str(user.ca)],
                dict(user.env, HOME=str(named_home)), cwd=named_home, timeout=120)
    assert named.rc == 0, named.stderr
    assert_same_tree(tree, named_home / "out")

    # A wrong key: refused before any data chunk is fetched.
    before = served_bytes(admin.group(1)) if admin else None
    bad = run([user.stoq, "get", with_key(ticket, b"\x42" * 32), "-o", "bad"], env, cwd=reader, timeout=60)
    assert bad.rc != 0 and "read key does not open" in bad.stderr, bad.stderr
    assert not (reader / "bad").exists()
    if before is not None:
        # Only manifests went out (the tree's data is over 1.5 MB).
        assert served_bytes(admin.group(1)) - before < 200_000

    # A damaged ticket: a clear message, nothing dialled.
    damaged = run([user.stoq, "get", ticket[:-3] + ("a" if ticket[-3] != "a" else "b") + ticket[-2:], "-o", "x"], env, cwd=reader)
    assert damaged.rc != 0 and "ticket" in damaged.stderr, damaged.stderr


def anonymous_requests(address: str, requests: list[bytes]) -> list[list[tuple[int, bytes]]]:
    """Connects without a certificate (aioquic) and sends each request on its own stream; the
    frames of each answer. (The node's chain is not checked here: this tests the node's rules.)"""
    import asyncio
    import ssl
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "Interop"))
    import stoq1_client as s1  # type: ignore[import-not-found]
    from aioquic.asyncio import QuicConnectionProtocol
    from aioquic.asyncio.client import connect as quic_connect
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import StreamDataReceived, StreamReset

    class Protocol(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self.streams: dict[int, list] = {}

        def quic_event_received(self, event):  # type: ignore[no-untyped-def]
            entry = self.streams.get(getattr(event, "stream_id", -1))
            if entry is None:
                return
            if isinstance(event, StreamDataReceived):
                entry[0] += event.data
                if event.end_stream and not entry[1].done():
                    entry[1].set_result(None)
            elif isinstance(event, StreamReset) and not entry[1].done():
                entry[1].set_result(None)

    async def go() -> list[list[tuple[int, bytes]]]:
        configuration = QuicConfiguration(is_client=True, alpn_protocols=["stoq/1"])
        configuration.verify_mode = ssl.CERT_NONE
        configuration.server_name = None
        host, port = s1.parse_address(address)
        answers = []
        async with quic_connect(host, port, configuration=configuration, create_protocol=Protocol, wait_connected=True) as proto:
            for data in requests:
                sid = proto._quic.get_next_available_stream_id()
                waiter = asyncio.get_running_loop().create_future()
                proto.streams[sid] = [bytearray(), waiter]
                proto._quic.send_stream_data(sid, data, end_stream=True)
                proto.transmit()
                await asyncio.wait_for(waiter, 10)
                buf = bytes(proto.streams.pop(sid)[0])
                frames = []
                while buf:
                    split = s1.split_frame(buf)
                    if split is None:
                        break
                    ftype, payload, buf = split
                    frames.append((ftype, payload))
                answers.append(frames)
        return answers

    return asyncio.run(go())


def test_anonymous_reader_limits(user: User, tmp_path: Path, procs: Procs) -> None:
    import struct
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "Interop"))
    import stoq1_client as s1  # type: ignore[import-not-found]

    src = tmp_path / "file.bin"
    src.write_bytes(b"share me\n" * 5000)
    store = tmp_path / "stores" / "anon-open"
    cid = content_id(user.ok("put", "--public", src, "--store", store).stdout)
    open_node = user.node(procs, "anon-open", "--role", "origin", "--public-read", store=store)

    # An anonymous client: PING answered; STATUS and NAME_PUBLISH forbidden (ERROR 5); the
    # connection keeps serving after a refusal.
    ping = s1.frame(s1.PING, struct.pack(">Q", 7) + s1.varint(0))
    answers = anonymous_requests(open_node.address, [ping, s1.frame(0x0A, b""), s1.frame(0x0F, s1.varint(3) + b"abc"), ping])
    assert answers[0][0][0] == s1.PONG and answers[3][0][0] == s1.PONG, answers
    for refused in answers[1:3]:
        (ftype, payload), = refused
        r = s1.Reader(payload, "ERROR")
        assert ftype == s1.ERROR and r.varint() == 5, refused
        assert "forbidden" in r.string(1024)

    # A node without --public-read: the anonymous reader is refused with a message that says so.
    closed_store = tmp_path / "stores" / "anon-closed"
    cid2 = content_id(user.ok("put", "--public", src, "--store", closed_store).stdout)
    closed = user.node(procs, "anon-closed", "--role", "origin", store=closed_store)
    refused = user.run("share", cid2, "--store", closed_store, "--node", closed.address, "--ca", user.ca)
    assert refused.rc != 0 and "--public-read" in refused.stderr, refused.stderr
    # With a certificate the publisher can still write the ticket; a reader without one is refused.
    ticket2 = user.ok("share", cid2, "--store", closed_store, "--node", closed.address, *user.tls("publisher")).stdout.strip()
    reader = tmp_path / "reader"
    reader.mkdir()
    env = dict(user.env, HOME=str(reader))
    got = run([user.stoq, "get", ticket2, "-o", "out"], env, cwd=reader)
    assert got.rc != 0 and "--public-read" in got.stderr, got.stderr

    # A ticket that names another network's CA: the node is not trusted.
    ticket = user.ok("share", cid, "--store", store, "--node", open_node.address, "--ca", user.ca).stdout.strip()
    body = ticket[len("stoq1"):]
    raw = bytearray(base64.b32decode(body.upper() + "=" * (-len(body) % 8)))
    raw[65:97] = b"\x01" * 32
    raw[-4:] = hashlib.sha256(bytes(raw[:-4])).digest()[:4]
    foreign = "stoq1" + base64.b32encode(bytes(raw)).decode().rstrip("=").lower()
    got = run([user.stoq, "get", foreign, "-o", "out"], env, cwd=reader)
    assert got.rc != 0 and "CA the ticket names" in got.stderr, got.stderr

    got = run([user.stoq, "get", ticket, "-o", "out"], env, cwd=reader)
    assert got.rc == 0, got.stderr
    assert (reader / "out").read_bytes() == src.read_bytes()
