"""Per-reader keys in access grants (issue 15 item 3), on the release binary over [::1].

A publisher puts a tree with `stoq put --sealed`, then issues reader A a grant that carries the
content key wrapped for A's reader key only (`stoq grant create --reader a.pub --content ID`,
extension type 1). `stoq grant inspect` shows the wrapped key (content and reader, never the key);
a narrowed copy keeps it. A fetches the content anonymously from a --public-read origin and opens
it with the grant and its key file; reader B holding A's grant cannot. Then A is dropped: its
grant is revoked at the origin, the origin stops, the publisher puts a second tree (published
after the drop: a new content key), the origin starts again, and the publisher grants the new
content to B only. B reads it; A's old grant is refused for it (its envelope names the old content
only), and so is A's grant with its envelope moved to the new content id. B, added later, reads
the first content too once granted, without anything being re-encrypted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

from conftest import Procs, User, assert_same_tree, content_id, reader_home, run


def make_tree(root: Path, seed: int) -> Path:
    (root / "board").mkdir(parents=True)
    (root / "board" / "minutes.txt").write_text("".join(f"line {i} of the minutes {seed}\n" for i in range(3000)))
    (root / "budget.csv").write_bytes(hashlib.sha256(str(seed).encode()).digest() * 2000)
    (root / "notes.md").write_text(f"# notes {seed}\n")
    os.chmod(root / "notes.md", 0o600)
    return root


def node_id(user: User, name: str) -> str:
    cert, _ = user.cert(name)
    m = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", cert).stdout)
    assert m, "stoq certs show printed no node id"
    return m.group(1)


def test_reader_grants_add_drop_and_later_content(user: User, tmp_path: Path, procs: Procs) -> None:
    store = tmp_path / "stores" / "rg-origin"
    tree1 = make_tree(tmp_path / "tree1", seed=1)
    cid1 = content_id(user.ok("put", "--sealed", tree1, "--store", store).stdout)
    publisher = node_id(user, "rg-publisher")
    pub_cert, pub_key = user.cert("rg-publisher")
    signer = ["--cert", pub_cert, "--key", pub_key]
    node_args = ("--role", "origin", "--public-read", "--publisher", publisher, "--operator", publisher, "--admin", "0")
    origin = user.node(procs, "rg-origin", *node_args, store=store)

    # Two readers, each with a key file of its own and no certificate.
    readers = {}
    for who in ("a", "b"):
        home = tmp_path / f"reader-{who}"
        home.mkdir()
        env = dict(user.env, HOME=str(home))
        made = run([user.stoq, "reader", "key"], env, cwd=home)
        assert made.rc == 0, made.stderr
        (tmp_path / f"{who}.pub").write_text(made.stdout)
        readers[who] = (home, env)

    def get(who: str, cid: str, grant: Path | str, out: str) -> object:
        home, env = readers[who]
        return run([user.stoq, "get", cid, "--peers", origin.address, "--ca", str(user.ca), "--grant", str(grant),
                    "--store", str(home / "store"), "-o", out], env, cwd=home, timeout=60)

    # Reader A is added: a grant carrying cid1's key wrapped for A.
    grant_a = tmp_path / "a.grant"
    user.ok("grant", "create", "--reader", tmp_path / "a.pub", "--content", cid1, "--store", store, "--expires", "1h", "-o", grant_a, *signer)
    shown = user.ok("grant", "inspect", grant_a, "--ca", user.ca).stdout
    assert f"type 1: the key of {cid1}, wrapped for reader" in shown and "content:" in shown and "read" in shown, shown
    doc = json.loads(user.ok("grant", "inspect", grant_a, "--json").stdout)
    assert doc["valid"] and doc["rights"] == ["read"], doc
    assert [(x["type"], x["bytes"], x["content"]) for x in doc["extensions"]] == [(1, 145, cid1)], doc
    key1 = (store / "private.keys").read_bytes()[32:64]
    assert key1.hex() not in shown + json.dumps(doc), "inspect must not show the content key"

    # A narrows its own grant (an earlier expiry) and reads with the narrowed copy.
    narrowed = user.ok("grant", "narrow", grant_a, "--expires", "30m").stdout.strip()
    assert json.loads(user.ok("grant", "inspect", narrowed, "--json").stdout)["extensions"][0]["content"] == cid1
    got = get("a", cid1, narrowed, "out1")
    assert got.rc == 0, got.stderr
    assert_same_tree(tree1, readers["a"][0] / "out1")

    # B holding A's grant: refused before anything is fetched.
    stolen = get("b", cid1, grant_a, "out1")
    assert stolen.rc != 0 and "another reader" in stolen.stderr, stolen.stderr
    assert not (readers["b"][0] / "out1").exists()

    # A is dropped: its grant is revoked at the origin.
    gid = doc["id"]
    revoked = user.ok("grant", "revoke", gid, "--node", origin.address, *user.tls("rg-publisher")).stdout
    assert f"revoked grant {gid}" in revoked, revoked

    # Content published after the drop: the origin stops (it holds the store), the publisher puts
    # a second tree (a new content key), the origin starts again on the same store.
    origin.proc.terminate()
    tree2 = make_tree(tmp_path / "tree2", seed=2)
    cid2 = content_id(user.ok("put", "--sealed", tree2, "--store", store).stdout)
    origin = user.node(procs, "rg-origin-again", *node_args, store=store)

    # The new content is granted to B only; B reads it.
    grant_b = tmp_path / "b.grant"
    user.ok("grant", "create", "--reader", tmp_path / "b.pub", "--content", cid2, "--store", store, "-o", grant_b, *signer)
    got_b = get("b", cid2, grant_b, "out2")
    assert got_b.rc == 0, got_b.stderr
    assert_same_tree(tree2, readers["b"][0] / "out2")

    # A's old grant does not open the new content: its key was never wrapped for A.
    denied = get("a", cid2, grant_a, "out2")
    assert denied.rc != 0 and "never wrapped" in denied.stderr and cid1 in denied.stderr, denied.stderr
    # Nor does A's grant with its envelope moved to the new content's id (the signature breaks,
    # and the envelope is bound to the old content by HPKE's info and associated data).
    text = grant_a.read_text().strip()
    raw = bytearray(base64.b32decode(text[len("stoqgrant1:"):].upper() + "=" * (-len(text[len("stoqgrant1:"):]) % 8)))
    old, new = _cid_bytes(cid1), _cid_bytes(cid2)
    at = raw.find(b"\x01" + old)
    assert at >= 0
    raw[at + 1:at + 33] = new
    forged = "stoqgrant1:" + base64.b32encode(bytes(raw)).decode().rstrip("=").lower()
    moved = get("a", cid2, forged, "out2")
    assert moved.rc != 0 and "does not verify" in moved.stderr, moved.stderr
    assert not (readers["a"][0] / "out2").exists()

    # B, added after A was dropped, reads the first content too once granted: nothing re-encrypted.
    grant_b1 = tmp_path / "b1.grant"
    user.ok("grant", "create", "--reader", tmp_path / "b.pub", "--content", cid1, "--store", store, "-o", grant_b1, *signer)
    got_b1 = get("b", cid1, grant_b1, "out1")
    assert got_b1.rc == 0, got_b1.stderr
    assert_same_tree(tree1, readers["b"][0] / "out1")

    # A grant for a content the store did not seal is refused at creation, with the reason.
    public = content_id(user.ok("put", "--public", tree1, "--store", tmp_path / "stores" / "plain").stdout)
    refused = user.run("grant", "create", "--reader", tmp_path / "a.pub", "--content", public, "--store", store, *signer)
    assert refused.rc != 0 and "not a sealed content" in refused.stderr, refused.stderr


def _cid_bytes(cid: str) -> bytes:
    body = cid[len("stoq:"):]
    return base64.b32decode(body.upper() + "=" * (-len(body) % 8))


NAMES = ["board", "minutes.txt", "budget.csv", "notes.md", "text/csv", "text/markdown"]


def test_sealed_put_into_a_running_origin(user: User, tmp_path: Path, procs: Procs) -> None:
    """`stoq put --sealed --node ORIGIN`: sealed on the publisher's side, uploaded as ciphertext;
    the origin's store and log hold no name or type and no key,
    and a reader granted the key reads it from the origin. A second sealed put of the same tree
    sends only its new index and manifests (data chunks deduplicate)."""
    publisher = node_id(user, "su-publisher")
    pub_cert, pub_key = user.cert("su-publisher")
    origin = user.node(procs, "su-origin", "--role", "origin", "--public-read", "--publisher", publisher, "--admin", "0")
    local = tmp_path / "stores" / "su-local"
    tree = make_tree(tmp_path / "tree", seed=3)
    tls = ["--cert", pub_cert, "--key", pub_key, "--ca", user.ca]
    put = user.ok("put", "--sealed", tree, "--node", origin.address, "--store", local, *tls)
    cid = content_id(put.stdout)
    assert "sealed; uploaded" in put.stderr, put.stderr
    assert (local / "private.keys").read_bytes()[:32] == _cid_bytes(cid), "the content key stays with the publisher"
    again = user.ok("put", "--sealed", tree, "--node", origin.address, "--store", local, *tls)
    assert content_id(again.stdout) != cid, "a second sealed put has a new key, so a new id"
    # Its data chunks are encrypted as any of the publisher's: the origin holds them already, and
    # only the new index and sealed manifests travel.
    first = re.search(r"uploaded (\d+) of (\d+) chunks", put.stderr)
    second = re.search(r"uploaded (\d+) of (\d+) chunks", again.stderr)
    assert first and second, put.stderr + again.stderr
    assert int(first.group(1)) == int(first.group(2)) and int(second.group(1)) < int(second.group(2)), (put.stderr, again.stderr)

    # The origin holds ciphertext only: no name, no type, no key file of the publisher's.
    stored = all_bytes(origin.store)
    for name in NAMES + [str(tree)]:
        assert name.encode() not in stored, f"the origin's store holds {name!r} in the clear"
    assert not (origin.store / "private.keys").exists()
    assert (local / "private.keys").read_bytes()[32:64] not in stored
    log = origin.proc.stdout() + origin.proc.stderr()
    for name in NAMES:
        assert name not in log, f"the origin's log names {name}"

    # A reader granted the key reads it from the origin (the origin alone holds the chunks now).
    home, env, _ = reader_home(user, tmp_path)
    grant = tmp_path / "r.grant"
    user.ok("grant", "create", "--reader", tmp_path / "r.pub", "--content", cid, "--store", local, "-o", grant, "--cert", pub_cert, "--key", pub_key)
    got = run([user.stoq, "get", cid, "--peers", origin.address, "--ca", str(user.ca), "--grant", str(grant), "--store", str(home / "store"), "-o", "out"],
              env, cwd=home, timeout=60)
    assert got.rc == 0, got.stderr
    assert_same_tree(tree, home / "out")

    # --sealed and --public exclude each other, with --node as without.
    refused = user.run("put", "--sealed", "--public", tree, "--node", origin.address, "--store", local, *tls)
    assert refused.rc != 0 and "exclude" in refused.stderr, refused.stderr


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())
