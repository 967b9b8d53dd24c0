"""The read right enforced by nodes (issue 15: "nodes check grants for every request that is not
plain public reading"), on the release binary over [::1].

One origin runs with `--private-reads` (and `--public-read`). It holds a private content, a sealed
one and a public one. A certificate of the network with no grant is refused the private content
with ERROR 7 saying which grant to present (before: any certificate read any chunk); a read grant
for that content serves it; a grant narrowed to another content, an expired grant and a revoked
grant are refused. An anonymous reader whose grant wraps the sealed content's key for it reads the
sealed content (the node follows the sealed index's chunk ids). The public content stays open to
everyone, anonymous readers too. An edge the origin lists with `--private-reader` fetches the
private content for its own client; an edge it does not list cannot. An edge that runs with
`--private-reads` itself serves its readers under their grants and refuses them without.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from conftest import Procs, User, assert_same_tree, content_id, reader_home, run


def node_id(user: User, name: str) -> str:
    cert, _ = user.cert(name)
    m = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", cert).stdout)
    assert m, "stoq certs show printed no node id"
    return m.group(1)


def tree(root: Path, seed: int) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "minutes.txt").write_text("".join(f"line {i} of {seed}\n" for i in range(4000)))
    (root / "notes.md").write_text(f"# notes {seed}\n")
    return root


def test_private_reads_need_a_read_grant(user: User, procs: Procs, tmp_path: Path) -> None:
    store = tmp_path / "stores" / "pr-origin"
    private_tree, other_tree, public_tree, sealed_tree = (tree(tmp_path / n, s) for n, s in (("private", 1), ("other", 2), ("public", 3), ("sealed", 4)))
    cid = content_id(user.ok("put", private_tree, "--store", store).stdout)
    other = content_id(user.ok("put", other_tree, "--store", store).stdout)
    public = content_id(user.ok("put", "--public", public_tree, "--store", store).stdout)
    sealed = content_id(user.ok("put", "--sealed", sealed_tree, "--store", store).stdout)
    publisher = node_id(user, "pr-publisher")
    pub_cert, pub_key = user.cert("pr-publisher")
    signer = ["--cert", pub_cert, "--key", pub_key]
    # A grant that expires in a second, made now and used after the steps below (no idle wait).
    short = user.ok("grant", "create", "--rights", "read", "--scope", f"content:{cid}", "--expires", "1s", *signer).stdout.strip()
    short_made = time.monotonic()
    edge_id = node_id(user, "pr-edge")
    origin = user.node(procs, "pr-origin", "--role", "origin", "--private-reads", "--public-read", "--publisher", publisher,
                       "--private-reader", edge_id, "--private-reader", node_id(user, "pr-edge3"), "--admin", "0", "--http", "[::1]:0", store=store)
    edge = user.node(procs, "pr-edge", "--role", "edge", "--upstream", origin.address, "--admin", "0")
    reader_tls = user.tls("pr-reader")
    key = ["--publisher-key", store / "publisher.key"]

    def get(what: str, out: str, *extra: object, peers: str = origin.address, tls: list[str] = reader_tls) -> object:
        return user.run("get", what, "-o", tmp_path / out, "--store", tmp_path / f"store-{out}", "--peers", peers, *tls,
                        "--source-retry-seconds", "2", "--no-routing", *extra, timeout=60)

    # 1. No grant: refused with ERROR 7 naming the grant to present (before: any certificate read it).
    refused = get(cid, "none", *key)
    assert refused.rc != 0, refused.stdout
    assert "--private-reads" in refused.stderr and "no grant: the request needs an access grant with right read" in refused.stderr, refused.stderr[-3000:]
    assert "stoq grant create --rights read" in refused.stderr, refused.stderr[-3000:]
    assert not (tmp_path / "none").exists()

    # 2. A read grant for the content serves it: root, manifests and chunks.
    grant = tmp_path / "read.grant"
    user.ok("grant", "create", "--rights", "read", "--scope", f"content:{cid}", "--expires", "10m", "-o", grant, *signer)
    gid = json.loads(user.ok("grant", "inspect", grant, "--json").stdout)["id"]
    got = get(cid, "granted", *key, "--grant", grant)
    assert got.rc == 0, got.stderr[-3000:]
    assert_same_tree(private_tree, tmp_path / "granted")

    # The operator sees the bounded allowances in STATUS (the reader's connection has closed).
    reads = json.loads(user.ok("status", "--node", origin.address, *user.tls(), "--json").stdout)["private_reads"]
    assert reads["per_connection_bound"] == 262_144 and reads["node_bound"] == 1_048_576 and reads["chunk_ids"] >= 0, reads

    # 3. Narrowed offline to another content: refused for this one, and it reads the other.
    narrowed = user.ok("grant", "narrow", user.ok("grant", "create", "--rights", "read", "--expires", "10m", *signer).stdout.strip(),
                       "--scope", f"content:{other}").stdout.strip()
    outside = get(cid, "narrowed", *key, "--grant", narrowed)
    assert outside.rc != 0 and "does not cover" in outside.stderr, outside.stderr[-3000:]
    assert get(other, "other", *key, "--grant", narrowed).rc == 0

    # 4. Public content stays open: a certificate with no grant, and an anonymous reader.
    assert get(public, "public").rc == 0
    assert_same_tree(public_tree, tmp_path / "public")
    anonymous = ["--ca", user.ca]
    assert get(public, "public-anon", tls=anonymous).rc == 0
    private_anon = get(cid, "private-anon", *key, tls=anonymous)
    assert private_anon.rc != 0 and "no grant" in private_anon.stderr, private_anon.stderr[-3000:]

    # The origin's HTTP front door serves the public content, not the private one, although the
    # origin holds the publisher key that opens it (HTTP readers present no grant).
    http = next((m for m in (re.match(r"^http \S+ (\[[0-9a-fA-F:]+\]:\d+)", line) for line in list(origin.proc.lines)) if m), None)
    assert http, "the origin printed no 'http' line"
    if shutil.which("curl"):
        def status(what: str) -> str:
            reply = subprocess.run(["curl", "-sk", "-g", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", f"https://{http.group(1)}/stoq/{what}/notes.md"],
                                   capture_output=True, timeout=20)
            return reply.stdout.decode()
        assert status(public) == "200" and status(cid) == "403", (status(public), status(cid))

    # 5. Sealed content, anonymously, with a grant wrapping the content key for the reader's key:
    #    the origin takes the grant from the anonymous reader and serves what the sealed index lists.
    home, env, _ = reader_home(user, tmp_path)
    wrapped = tmp_path / "sealed.grant"
    user.ok("grant", "create", "--reader", tmp_path / "r.pub", "--content", sealed, "--store", store, "--expires", "10m", "-o", wrapped, *signer)
    opened = run([user.stoq, "get", sealed, "--peers", origin.address, "--ca", str(user.ca), "--grant", str(wrapped),
                  "--store", str(home / "store"), "-o", "out"], env, cwd=home, timeout=60)
    assert opened.rc == 0, opened.stderr[-3000:]
    assert_same_tree(sealed_tree, home / "out")
    # Without it, the same anonymous reader is refused the sealed index itself.
    closed = run([user.stoq, "get", sealed, "--peers", origin.address, "--ca", str(user.ca),
                  "--store", str(home / "store2"), "-o", "out2", "--source-retry-seconds", "2"], env, cwd=home, timeout=60)
    assert closed.rc != 0 and "no grant" in closed.stderr, closed.stderr[-3000:]

    # 6. An edge the origin lists as a private reader fetches for its client (which needs no grant
    #    at the edge: the edge does not run with --private-reads).
    via_edge = get(cid, "via-edge", *key, peers=edge.address)
    assert via_edge.rc == 0, via_edge.stderr[-3000:]
    assert_same_tree(private_tree, tmp_path / "via-edge")
    # An edge the origin does not list cannot fill it.
    stranger_edge = user.node(procs, "pr-edge2", "--role", "edge", "--upstream", origin.address, "--admin", "0")
    unlisted = get(cid, "via-edge2", *key, peers=stranger_edge.address)
    assert unlisted.rc != 0, unlisted.stdout
    assert not (tmp_path / "via-edge2" / "notes.md").exists()

    # An edge can enforce the read right itself: with --private-reads and the origin's publisher
    # listed (the grants' issuer), it serves its reader under the grant and refuses one without.
    strict = user.node(procs, "pr-edge3", "--role", "edge", "--upstream", origin.address, "--private-reads", "--publisher", publisher, "--admin", "0")
    user.ok("grant", "create", "--rights", "read", "--scope", f"content:{cid}", "--expires", "10m", "-o", tmp_path / "edge.grant", *signer)
    strict_refused = get(cid, "strict-none", *key, peers=strict.address)
    assert strict_refused.rc != 0 and "no grant" in strict_refused.stderr, strict_refused.stderr[-3000:]
    assert get(public, "strict-public", peers=strict.address).rc == 0
    strict_ok = get(cid, "strict-granted", *key, "--grant", tmp_path / "edge.grant", peers=strict.address)
    assert strict_ok.rc == 0, strict_ok.stderr[-3000:]
    assert_same_tree(private_tree, tmp_path / "strict-granted")

    # 7. An expired grant is refused.
    time.sleep(max(0.0, 2.1 - (time.monotonic() - short_made)))
    expired = get(cid, "expired", *key, "--grant", short)
    assert expired.rc != 0 and "no grant" in expired.stderr and "expired" in expired.stderr, expired.stderr[-3000:]

    # 8. A revoked grant is refused (the publisher revokes it at the origin).
    assert f"revoked grant {gid}" in user.ok("grant", "revoke", gid, "--node", origin.address, *user.tls("pr-publisher")).stdout
    revoked = get(cid, "revoked", *key, "--grant", grant)
    assert revoked.rc != 0 and "no grant" in revoked.stderr and "revoked" in revoked.stderr, revoked.stderr[-3000:]

    # The audit trail still names the read grant the reader of step 2 fetched under.
    deadline = time.monotonic() + 8
    while f"grant={gid}" not in user.ok("audit", "show", store).stdout:
        assert time.monotonic() < deadline, "the origin's audit trail does not name the read grant"
        time.sleep(0.3)
