"""Access grants and revocation (issue 15 item 1) on the release binary over [::1].

An origin and an edge below it run with an operator (`--operator`, also the origin's publisher).
STATUS is refused to a foreign certificate of the network with ERROR 7 (the issue's "read any
node's STATUS JSON" is now a regression check) and allowed with a `status` grant the operator
issued; a publish grant narrowed offline to `site/blog` and to one peer lets that peer upload in
scope and is refused out of scope; PURGE on the edge needs a grant; an expired grant is refused; and a grant the operator revokes at
the origin is refused **at the edge** once the origin passed the signed revocation list down.
Nodes start once; the whole file takes a few seconds.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from conftest import Procs, User, run


def node_id(user: User, name: str) -> str:
    cert, _ = user.cert(name)
    m = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", cert).stdout)
    assert m, "stoq certs show printed no node id"
    return m.group(1)


def test_grants_status_publish_expiry_and_revocation_at_an_edge(user: User, procs: Procs, tmp_path: Path) -> None:
    operator = node_id(user, "gr-operator")
    op_cert, op_key = user.cert("gr-operator")
    reader_cert, _ = user.cert("gr-reader")
    origin = user.node(procs, "gr-origin", "--role", "origin", "--publisher", operator, "--operator", operator)
    edge = user.node(procs, "gr-edge", "--role", "edge", "--upstream", origin.address, "--operator", operator)
    op_tls, reader_tls = user.tls("gr-operator"), user.tls("gr-reader")
    signer = ["--cert", op_cert, "--key", op_key]
    # A grant that expires in a second, made now and used after the steps below (no idle wait).
    short = user.ok("grant", "create", "--rights", "status", "--expires", "1s", *signer).stdout.strip()
    short_made = time.monotonic()

    # 1. A foreign certificate of the network no longer reads STATUS (before: the whole JSON); the operator does.
    refused = user.run("status", "--node", origin.address, *reader_tls, "--json")
    assert refused.rc != 0, refused.stdout
    assert re.search(r"^stoq: error: .*no grant: the request needs an access grant with right status for scope this node", refused.stderr, re.M), refused.stderr
    assert '"totals"' not in refused.stdout
    assert "totals" in json.loads(user.ok("status", "--node", origin.address, *op_tls, "--json").stdout)

    # 2. With a status grant (bound to the reader's certificate) the reader reads it.
    status_grant = tmp_path / "status.grant"
    user.ok("grant", "create", "--rights", "status", "--expires", "1h", "--peer", reader_cert, "-o", status_grant, *signer)
    doc = json.loads(user.ok("status", "--node", origin.address, *reader_tls, "--grant", status_grant, "--json").stdout)
    assert "totals" in doc
    # Bound to the reader: the same grant is useless to another certificate.
    other = user.run("status", "--node", origin.address, *user.tls("gr-other"), "--grant", status_grant, "--json")
    assert other.rc != 0 and "bound to node" in other.stderr, other.stderr
    shown = json.loads(user.ok("grant", "inspect", status_grant, "--ca", user.ca, "--json").stdout)
    assert shown["rights"] == ["status"] and shown["valid"] and shown["publisher"] == operator, shown

    # 3. A publish grant narrowed offline to site/blog and to the reader: in scope works, out of scope is refused.
    publish_grant = user.ok("grant", "create", "--rights", "publish,status", "--scope", "name:site/", *signer).stdout.strip()
    narrowed = user.ok("grant", "narrow", publish_grant, "--rights", "publish", "--scope", "name:site/blog/", "--peer", reader_cert).stdout.strip()
    inspected = json.loads(user.ok("grant", "inspect", narrowed, "--json").stdout)
    assert inspected["rights"] == ["publish"] and inspected["blocks"] == 2 and inspected["scopes"] == [["name:site/"], ["name:site/blog/"]], inspected
    for d in ("site/blog", "site/shop"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "page.html").write_text(f"<h1>{d}</h1>\n" * 100)
    put = run([user.stoq, "put", "site/blog/page.html", "--node", origin.address, *reader_tls, "--grant", narrowed], user.env, timeout=60, cwd=tmp_path)
    assert put.rc == 0 and put.stdout.startswith("stoq:"), put.stderr
    out = run([user.stoq, "put", "site/shop/page.html", "--node", origin.address, *reader_tls, "--grant", narrowed], user.env, timeout=60, cwd=tmp_path)
    assert out.rc != 0 and re.search(r"no grant: .*right publish for scope name 'site/shop/page.html'", out.stderr), out.stderr
    # Without a grant the reader is no publisher (unchanged message).
    plain = run([user.stoq, "put", "site/blog/page.html", "--node", origin.address, *reader_tls], user.env, timeout=60, cwd=tmp_path)
    assert plain.rc != 0 and "not a publisher of this origin" in plain.stderr, plain.stderr

    # 4. An expired grant is refused.
    time.sleep(max(0.0, 2.1 - (time.monotonic() - short_made)))
    expired = user.run("status", "--node", origin.address, *reader_tls, "--grant", short, "--json")
    assert expired.rc != 0 and "expired" in expired.stderr, expired.stderr

    # 5. Revocation reaches the edge: the grant works there, the operator revokes it at the origin,
    #    the origin passes the signed list down, and the edge refuses it.
    edge_grant = user.ok("grant", "create", "--rights", "status,purge", "--expires", "1h", *signer).stdout.strip()
    assert "totals" in json.loads(user.ok("status", "--node", edge.address, *reader_tls, "--grant", edge_grant, "--json").stdout)
    # PURGE on the edge (it lists the operator): refused without a grant, taken with one.
    content = put.stdout.strip().splitlines()[-1]
    no_purge = user.run("purge", content, "--node", edge.address, *reader_tls)
    assert no_purge.rc != 0 and "right purge for scope content" in no_purge.stderr, no_purge.stderr
    assert "purged " + content in user.ok("purge", content, "--node", edge.address, *reader_tls, "--grant", edge_grant).stdout
    gid = json.loads(user.ok("grant", "inspect", edge_grant, "--json").stdout)["id"]
    revoked = user.ok("grant", "revoke", gid, "--node", origin.address, *op_tls).stdout
    assert f"revoked grant {gid}" in revoked and "version 1" in revoked, revoked
    deadline = time.monotonic() + 8
    while True:
        r = user.run("status", "--node", edge.address, *reader_tls, "--grant", edge_grant, "--json")
        if r.rc != 0:
            assert "revoked" in r.stderr, r.stderr
            break
        assert time.monotonic() < deadline, "the edge still accepts a grant revoked at the origin"
        time.sleep(0.3)
    # The origin refuses it too, and keeps the list across a restart of its state (persisted).
    assert (origin.store / "revocations.json").exists()
    assert (edge.store / "revocations.json").exists()
    again = user.run("status", "--node", origin.address, *reader_tls, "--grant", edge_grant, "--json")
    assert again.rc != 0 and "revoked" in again.stderr, again.stderr
