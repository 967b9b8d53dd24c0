"""Private metadata and per-reader keys (issue 15, items 2 and 3), on the release binary over [::1].

A publisher puts a tree with `stoq put --sealed`: its origin's store, its STATUS and its log hold
no file name or type. Reader A makes a reader key (`stoq reader key`), the publisher shares the
content for A (`stoq share ID --reader a.pub`), and A reads it with nothing but the ticket and its
key file. Reader B, holding A's ticket, cannot open it. After A is dropped, new content gets a new
key that is wrapped for B only: A can open neither B's ticket nor its own ticket pointed at the new
content, and the old content's key does not open the new one. One origin, started once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from conftest import Procs, User, assert_same_tree, content_id, run

NAMES = ["board-minutes", "confidential-budget.csv", "merger-memo.txt", "top-secret-notes.md", "link-to-memo"]


def make_secret_tree(root: Path, seed: int) -> Path:
    (root / "board-minutes").mkdir(parents=True)
    (root / "board-minutes" / "merger-memo.txt").write_text("".join(f"line {i} of the memo {seed}\n" for i in range(6000)))
    (root / "confidential-budget.csv").write_bytes(hashlib.sha256(str(seed).encode()).digest() * 4000)
    (root / "top-secret-notes.md").write_text(f"# notes {seed}\n")
    os.chmod(root / "top-secret-notes.md", 0o600)
    (root / "link-to-memo").symlink_to("board-minutes/merger-memo.txt")
    return root


def ticket_bytes(ticket: str) -> bytearray:
    body = ticket[len("stoq1"):]
    return bytearray(base64.b32decode(body.upper() + "=" * (-len(body) % 8)))


def ticket_text(raw: bytearray) -> str:
    raw[-4:] = hashlib.sha256(bytes(raw[:-4])).digest()[:4]
    return "stoq1" + base64.b32encode(bytes(raw)).decode().rstrip("=").lower()


def keyring(path: Path) -> dict[bytes, bytes]:
    data = path.read_bytes()
    return {data[i:i + 32]: data[i + 32:i + 64] for i in range(0, len(data) - len(data) % 64, 64)}


def cid_bytes(cid: str) -> bytes:
    body = cid[len("stoq:"):]
    return base64.b32decode(body.upper() + "=" * (-len(body) % 8))


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_sealed_content_and_reader_keys(user: User, tmp_path: Path, procs: Procs) -> None:
    store = tmp_path / "stores" / "sealed-origin"
    tree = make_secret_tree(tmp_path / "tree", seed=1)
    put = user.ok("put", "--sealed", tree, "--store", store)
    cid = content_id(put.stdout)
    # Published "after A is dropped": a new content, a new key, wrapped for B only (below).
    tree2 = make_secret_tree(tmp_path / "tree2", seed=2)
    cid2 = content_id(user.ok("put", "--sealed", tree2, "--store", store).stdout)
    keys = keyring(store / "private.keys")
    assert len(keys) == 2 and keys[cid_bytes(cid)] != keys[cid_bytes(cid2)], "each sealed content has a key of its own"
    assert not (store / "public.keys").exists()

    # The origin's store holds no name and no type of the tree (chunks, index database, keyrings).
    stored = all_bytes(store)
    for name in NAMES + ["text/plain", "text/csv", "text/markdown", str(tree)]:
        assert name.encode() not in stored, f"the origin's store holds {name!r} in the clear"

    # The store stays consistent: the sealed index names every chunk (nothing orphaned).
    verified = user.ok("store", "verify", "--store", store)
    said = verified.stdout + verified.stderr
    assert " 0 orphaned" in said and "store is consistent" in said, said

    origin = user.node(procs, "sealed-origin", "--role", "origin", "--public-read", "--admin", "0", "--http", "[::1]:0", store=store)
    http = next((m for m in (re.match(r"^http \S+ (\[[0-9a-fA-F:]+\]:\d+)", line) for line in list(origin.proc.lines)) if m), None)
    assert http, "the origin printed no 'http' line"
    if shutil.which("curl"):
        # Its HTTP front door cannot read a sealed content: 403, and no name in the answer.
        reply = subprocess.run(["curl", "-sk", "-g", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10", f"https://{http.group(1)}/stoq/{cid}/"],
                               capture_output=True, timeout=20)
        body, _, code = reply.stdout.decode("latin-1").rpartition("\n")
        assert code == "403", reply.stdout
        assert not any(name in body for name in NAMES), body

    # Two readers, each with a key of their own (fresh HOMEs: no certificate, no store).
    homes = {}
    pubs = {}
    for who in ("a", "b"):
        home = tmp_path / f"reader-{who}"
        home.mkdir()
        env = dict(user.env, HOME=str(home))
        made = run([user.stoq, "reader", "key"], env, cwd=home)
        assert made.rc == 0 and re.fullmatch(r"stoqreader1[a-z2-7]{52}\n", made.stdout), made.stdout + made.stderr
        assert (home / ".stoq" / "reader.key").stat().st_mode & 0o777 == 0o600
        pubs[who] = tmp_path / f"{who}.pub"
        pubs[who].write_text(made.stdout)
        homes[who] = (home, env)

    # A sealed content is shared only for a reader.
    bare = user.run("share", cid, "--store", store, "--node", origin.address, "--ca", user.ca)
    assert bare.rc != 0 and "--reader" in bare.stderr, bare.stderr
    ticket_a = user.ok("share", cid, "--store", store, "--node", origin.address, "--ca", user.ca, "--reader", pubs["a"]).stdout.strip()
    assert ticket_a.startswith("stoq1") and ticket_bytes(ticket_a)[0] == 2

    # Reader A reads with the ticket and its default key file.
    home_a, env_a = homes["a"]
    got = run([user.stoq, "get", ticket_a, "-o", "out"], env_a, cwd=home_a, timeout=60)
    assert got.rc == 0, got.stderr
    assert_same_tree(tree, home_a / "out")

    # Reader B with A's ticket: refused, nothing written.
    home_b, env_b = homes["b"]
    stolen = run([user.stoq, "get", ticket_a, "-o", "out"], env_b, cwd=home_b, timeout=60)
    assert stolen.rc != 0 and "another reader" in stolen.stderr, stolen.stderr
    assert not (home_b / "out").exists()

    # A is dropped: the new content's ticket is for B only; B reads it, A cannot.
    ticket_b2 = user.ok("share", cid2, "--store", store, "--node", origin.address, "--ca", user.ca, "--reader", pubs["b"]).stdout.strip()
    got_b = run([user.stoq, "get", ticket_b2, "-o", "out2"], env_b, cwd=home_b, timeout=60)
    assert got_b.rc == 0, got_b.stderr
    assert_same_tree(tree2, home_b / "out2")
    denied = run([user.stoq, "get", ticket_b2, "-o", "out2"], env_a, cwd=home_a, timeout=60)
    assert denied.rc != 0 and "another reader" in denied.stderr, denied.stderr
    # A's own ticket pointed at the new content: its wrapped key is bound to the old content.
    moved = ticket_bytes(ticket_a)
    moved[1:33] = cid_bytes(cid2)
    repointed = run([user.stoq, "get", ticket_text(moved), "-o", "out2"], env_a, cwd=home_a, timeout=60)
    assert repointed.rc != 0 and "another content" in repointed.stderr, repointed.stderr
    # Even the old content's key itself (all A could have learnt) does not open the new content.
    old_key = bytearray([1]) + bytearray(cid_bytes(cid2)) + bytearray(keys[cid_bytes(cid)]) + moved[178:]
    with_old_key = run([user.stoq, "get", ticket_text(old_key), "-o", "out2"], env_a, cwd=home_a, timeout=60)
    assert with_old_key.rc != 0 and "does not open" in with_old_key.stderr, with_old_key.stderr
    assert not (home_a / "out2").exists()

    # The node served all that: its STATUS and its log still name no file.
    status = user.ok("status", "--node", origin.address, *user.tls("client"), "--json").stdout
    admin = re.search(r"admin=(\[[0-9a-f:]+\]:\d+)", origin.proc.stdout())
    if admin:
        with urllib.request.urlopen(f"http://{admin.group(1)}/status", timeout=10) as r:
            status += json.dumps(json.load(r))
    log = origin.proc.stdout() + origin.proc.stderr()
    for name in NAMES + ["text/csv", "text/markdown"]:
        assert name not in status, f"STATUS names {name}"
        assert name not in log, f"the node's log names {name}"
